"""Speech-out latency through Redis, the playback lead and barge-in.

    .venv/bin/python bench/speak_latency.py

This process plays Twilio (signed webhook, signed upgrade, real-time caller
silence on every stream) *and*, as a separate process from daphne, makes the
calls speak with ``mediastream.api.aspeak(..., wait=False)`` through the Redis
channel layer. Times are ``time.perf_counter()`` in this process: from just
before ``aspeak()`` to the arrival of the item's first media frame on the
client socket.

Phases (each with its own daphne: settings are per process):

1. **speak -> first frame**, TTS that answers at once
   (``mediastream.tts.dummy.SilenceBackend``, ~200 ms of audio per line):
   ``--speaks`` lines at ``--rate``/s, round-robin over ``--streams`` live
   streams (optionally with ``--load`` more streams of real-time media on the
   same daphne). Target p99 < 10 ms.
2. **playback lead and barge-in**, for each ``PLAYBACK_LEAD_SECONDS`` in
   ``--leads``: a ~6 s item, interrupted (``ainterrupt``) ``--barge-after``
   seconds after its first frame. The client keeps a virtual playout clock
   (frame k starts playing at max(arrival, end of frame k-1)), so it knows
   how much audio was buffered ahead ("lead"), whether the buffer ran dry
   (underruns) and how much unplayed audio ``clear`` discarded ("stale").
3. **time to first audio with Piper** (``mediastream.tts.piper.PiperBackend``):
   the cold first request (worker start + voice load), then a short and a long
   sentence ``--piper-repeats`` times each. Skipped, with the reason, when the
   backend cannot be built here.

Cleans up its daphne processes, database and Redis keys; prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    AUTH_TOKEN,
    PUBLIC_BASE_URL,
    REDIS_URL,
    ROOT,
    Daphne,
    bench_database,
    bench_overrides,
    cpu_seconds,
    fmt,
    log,
    raise_nofile,
    redis_cleanup,
    run_id,
    table,
)

SILENCE = b"\xff" * 160
SHORT_TEXT = "Your table for two is booked at seven."
LONG_TEXT = (
    "Thanks for calling, I have checked the calendar for next week and there are three free slots on "
    "Tuesday afternoon, two on Wednesday morning and one late on Friday, so tell me which of those suits "
    "you best and I will put you down for it straight away."
)
#: ~300 characters: 6 s of audio at 20 ms per character (one TTS piece below TTS_MAX_CHARS).
BARGE_TEXT = ("This is a long answer that keeps on going so that the caller can interrupt it. " * 4)[:300]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[k]


# --- the simulated Twilio side ------------------------------------------------------


@dataclass
class Playout:
    """The client's view of one stream's outbound audio, on a virtual playout clock."""

    end: float = 0.0  # when the audio received so far finishes playing
    item_started: bool = False
    frames: int = 0
    leads: list[tuple[float, float]] = field(default_factory=list)  # (time, buffered seconds after the frame)
    underruns: int = 0
    underrun_s: float = 0.0
    stale_at_clear: list[float] = field(default_factory=list)
    clear_times: list[float] = field(default_factory=list)
    frames_after_clear: int = 0
    first_frame_at: float | None = None

    def media(self, now: float, seconds: float = 0.02) -> None:
        """A media message of ``seconds`` of audio arrived (several 20 ms frames since PLAYBACK_CHUNK_MS)."""
        if self.item_started and now > self.end:
            self.underruns += 1
            self.underrun_s += now - self.end
        start = max(now, self.end)
        self.end = start + seconds
        self.frames += 1
        self.leads.append((now, self.end - now))
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.item_started = True
        if self.clear_times:
            self.frames_after_clear += 1

    def clear(self, now: float) -> None:
        self.stale_at_clear.append(max(0.0, self.end - now))
        self.clear_times.append(now)
        self.end = now
        self.item_started = False


class LiveStream:
    """One simulated call: webhook, stream, real-time caller silence, timing hooks."""

    def __init__(self, stream, call_sid: str) -> None:
        self.stream = stream
        self.call_sid = call_sid
        self.waiting_since: float | None = None
        self.first_frame = asyncio.get_running_loop().create_future()
        self.playout = Playout()
        self.stream.on_message = self._on_message
        self._sender: asyncio.Task | None = None

    def _on_message(self, message: dict, now: float) -> None:
        event = message.get("event")
        if event == "media":
            self.playout.media(now, len(base64.b64decode(message["media"]["payload"])) / 8000)
            if self.waiting_since is not None and not self.first_frame.done():
                self.first_frame.set_result(now)
        elif event == "clear":
            self.playout.clear(now)

    def expect_audio(self) -> asyncio.Future:
        self.first_frame = asyncio.get_running_loop().create_future()
        self.waiting_since = time.perf_counter()
        return self.first_frame

    def reset_playout(self) -> None:
        self.playout = Playout()

    def start_caller_audio(self) -> None:
        self._sender = asyncio.create_task(self._send_silence())

    async def _send_silence(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            k += 1
            delay = start + k * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.stream.send_media(SILENCE)
            except Exception:
                return

    async def hang_up(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        try:
            await self.stream.stop()
            await self.stream.wait_closed(10)
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.stream.close(), 5)
        except Exception:
            pass


async def open_streams(daphne: Daphne, n: int) -> list[LiveStream]:
    from mediastream.simulator import TwilioCall, TwilioStream, stream_urls

    out = []
    for _ in range(n):
        call = TwilioCall(server_url=daphne.http, public_url=PUBLIC_BASE_URL, auth_token=AUTH_TOKEN)
        instructions = await call.answer()
        connect_url, signed_url = stream_urls(PUBLIC_BASE_URL, daphne.http, instructions.url)
        stream = TwilioStream(
            connect_url, signed_url=signed_url, auth_token=AUTH_TOKEN, call_sid=call.call_sid, parameters=instructions.parameters
        )
        await stream.connect()
        live = LiveStream(stream, call.call_sid)
        await stream.start()
        live.start_caller_audio()
        out.append(live)
    # The consumer registers its channel once the start is admitted (a DB round trip).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        snap = await asyncio.to_thread(daphne.get, "/bench/stats")
        if snap["streaming"] >= n:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    return out


# --- phases ------------------------------------------------------------------------------


async def phase_speak(daphne: Daphne, args) -> dict:
    from mediastream.api import aspeak

    streams = await open_streams(daphne, args.streams)
    latencies: list[float] = []
    call_ms: list[float] = []
    missed = 0
    interval = 1.0 / args.rate
    loop = asyncio.get_running_loop()
    cpu0 = cpu_seconds(daphne.pid)
    t_start = loop.time()
    try:
        # A few unmeasured lines first: connections to Redis, first playback task, etc.
        for i in range(min(args.streams, 4)):
            live = streams[i]
            fut = live.expect_audio()
            await aspeak(live.call_sid, f"Warm up {i}.", wait=False)
            await asyncio.wait_for(fut, 5)
            await asyncio.sleep(interval)
        t_start = loop.time()
        for i in range(args.speaks):
            due = t_start + i * interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            live = streams[i % len(streams)]
            fut = live.expect_audio()
            t0 = live.waiting_since
            await aspeak(live.call_sid, f"Line {i}.", wait=False)
            call_ms.append((time.perf_counter() - t0) * 1000)
            # Collected in the background so the next line keeps to the schedule.
            fut.add_done_callback(lambda f, t0=t0: latencies.append((f.result() - t0) * 1000) if not f.cancelled() else None)
        await asyncio.sleep(1.0)
        missed = args.speaks - len(latencies)
    finally:
        for live in streams:
            if not live.first_frame.done():
                live.first_frame.cancel()
        cpu = cpu_seconds(daphne.pid) - cpu0
        wall = loop.time() - t_start
        await asyncio.gather(*(s.hang_up() for s in streams))
    return {
        "n": len(latencies),
        "missed": missed,
        "p50": pct(latencies, 50),
        "p90": pct(latencies, 90),
        "p99": pct(latencies, 99),
        "max": max(latencies) if latencies else None,
        "call_p50": pct(call_ms, 50),
        "call_p99": pct(call_ms, 99),
        "daphne_cpu_pct": 100 * cpu / wall if wall > 0 else None,
    }


async def phase_barge(daphne: Daphne, args, lead: float) -> dict:
    from mediastream.api import ainterrupt, aspeak

    streams = await open_streams(daphne, 1)
    live = streams[0]
    rows = []
    try:
        for trial in range(args.barge_trials):
            live.reset_playout()
            fut = live.expect_audio()
            t0 = live.waiting_since
            await aspeak(live.call_sid, BARGE_TEXT, wait=False)
            first = await asyncio.wait_for(fut, 10)
            await asyncio.sleep(args.barge_after - (time.perf_counter() - first))
            t_int = time.perf_counter()
            count = await ainterrupt(live.call_sid, "bench barge-in", wait=True)
            # Let straggling frames (there should be none) arrive.
            await asyncio.sleep(0.5)
            p = live.playout
            steady = [b for (t, b) in p.leads if t >= first + 0.5 and (not p.clear_times or t < p.clear_times[0])]
            rows.append(
                {
                    "first_ms": (first - t0) * 1000,
                    "lead_median_ms": statistics.median(steady) * 1000 if steady else None,
                    "lead_max_ms": max(steady) * 1000 if steady else None,
                    "underruns": p.underruns,
                    "underrun_ms": p.underrun_s * 1000,
                    "stale_ms": p.stale_at_clear[0] * 1000 if p.stale_at_clear else None,
                    "clear_ms": (p.clear_times[0] - t_int) * 1000 if p.clear_times else None,
                    "frames_after_clear": p.frames_after_clear,
                    "interrupted": count,
                }
            )
            await asyncio.sleep(0.5)
    finally:
        await asyncio.gather(*(s.hang_up() for s in streams))

    def med(key):
        values = [r[key] for r in rows if r[key] is not None]
        return statistics.median(values) if values else None

    return {
        "lead": lead,
        "trials": len(rows),
        "lead_median_ms": med("lead_median_ms"),
        "lead_max_ms": max((r["lead_max_ms"] or 0) for r in rows) if rows else None,
        "underruns": sum(r["underruns"] for r in rows),
        "underrun_ms": sum(r["underrun_ms"] for r in rows),
        "stale_ms": med("stale_ms"),
        "stale_max_ms": max((r["stale_ms"] or 0) for r in rows) if rows else None,
        "clear_ms": med("clear_ms"),
        "frames_after_clear": sum(r["frames_after_clear"] for r in rows),
        "first_ms": med("first_ms"),
    }


async def phase_piper(daphne: Daphne, args) -> dict:
    from mediastream.api import ainterrupt, aspeak

    streams = await open_streams(daphne, 1)
    live = streams[0]
    out: dict = {"short": [], "long": [], "cold_ms": None}
    try:
        fut = live.expect_audio()
        t0 = live.waiting_since
        await aspeak(live.call_sid, SHORT_TEXT, wait=False)
        first = await asyncio.wait_for(fut, 90)
        out["cold_ms"] = (first - t0) * 1000
        await ainterrupt(live.call_sid, "bench", wait=True)
        await asyncio.sleep(0.3)
        for _ in range(args.piper_repeats):
            for key, text in (("short", SHORT_TEXT), ("long", LONG_TEXT)):
                fut = live.expect_audio()
                t0 = live.waiting_since
                await aspeak(live.call_sid, text, wait=False)
                try:
                    first = await asyncio.wait_for(fut, 30)
                    out[key].append((first - t0) * 1000)
                except TimeoutError:
                    out.setdefault("timeouts", 0)
                    out["timeouts"] = out.get("timeouts", 0) + 1
                await ainterrupt(live.call_sid, "bench", wait=True)
                await asyncio.sleep(0.3)
    finally:
        await asyncio.gather(*(s.hang_up() for s in streams))
    return out


def piper_status() -> str | None:
    """None when PiperBackend can be built here, else why not."""
    try:
        module = importlib.import_module("mediastream.tts.piper")
        module.PiperBackend()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --- orchestration --------------------------------------------------------------------------


def setup_django(database_url: str, prefix: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ["CHANNEL_LAYER_PREFIX"] = prefix
    os.environ["MEDIASTREAM_OVERRIDES"] = "{}"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def silence_tts() -> dict:
    # ~20 ms of audio per character, at least 200 ms: "Line 12." is 200 ms, BARGE_TEXT 6 s.
    return {"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {"MS_PER_CHAR": 20, "MIN_MS": 200}}


async def start_load(daphne: Daphne, args):
    """``--load`` extra streams of real-time caller silence on this daphne (bench.loadgen)."""
    if not args.load:
        return None
    from bench.stream_load import Worker

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loader = await asyncio.to_thread(Worker, daphne.http, 0, 1, "silence", env)
    opened = await asyncio.to_thread(loader.ask, {"cmd": "open", "n": args.load}, 600)
    log(f"  {opened['opened']} background streams open ({opened['failed']} failed)")
    await asyncio.to_thread(loader.ask, {"cmd": "reset"}, 30)
    return loader


async def stop_load(loader) -> dict | None:
    if loader is None:
        return None
    try:
        stats = await asyncio.to_thread(loader.ask, {"cmd": "stats"}, 30)
        await asyncio.to_thread(loader.ask, {"cmd": "stop"}, 120)
        return stats
    except Exception as exc:
        log(f"  background load did not stop cleanly: {exc}")
        return None
    finally:
        loader.kill()


async def run(args, database_url: str, prefix: str, workdir: Path) -> dict:
    results: dict = {"barge": [], "logs": {"warnings": 0, "errors": 0}}

    def start(name: str, **overrides) -> Daphne:
        overrides.setdefault("PLAYBACK_CHUNK_MS", args.chunk_ms)
        return Daphne(database_url=database_url, prefix=prefix, overrides=bench_overrides(**overrides), log_path=workdir / f"daphne-{name}.log")

    async def finish(daphne: Daphne) -> None:
        await asyncio.to_thread(daphne.drain)
        await asyncio.to_thread(daphne.stop)
        for key, value in daphne.log_counts().items():
            results["logs"][key] += value

    leads = list(args.leads)
    base_lead = 0.3
    # Phase 1, and phase 2 for the default lead on the same daphne.
    daphne = await asyncio.to_thread(start, "speak", TTS=silence_tts(), PLAYBACK_LEAD_SECONDS=base_lead)
    loader = None
    try:
        loader = await start_load(daphne, args)
        log(f"speak: {args.speaks} lines at {args.rate:g}/s over {args.streams} streams (+{args.load} background)")
        results["speak"] = await phase_speak(daphne, args)
        if base_lead in leads:
            log(f"barge-in: PLAYBACK_LEAD_SECONDS={base_lead}")
            results["barge"].append(await phase_barge(daphne, args, base_lead))
            leads.remove(base_lead)
        results["speak"]["load_stats"] = await stop_load(loader)
        loader = None
    finally:
        await stop_load(loader)
        await finish(daphne)
    for lead in leads:
        log(f"barge-in: PLAYBACK_LEAD_SECONDS={lead}")
        daphne = await asyncio.to_thread(start, f"lead-{lead}", TTS=silence_tts(), PLAYBACK_LEAD_SECONDS=lead)
        loader = None
        try:
            loader = await start_load(daphne, args)
            results["barge"].append(await phase_barge(daphne, args, lead))
        finally:
            await stop_load(loader)
            await finish(daphne)
    results["barge"].sort(key=lambda r: r["lead"])
    # Phase 3.
    if args.piper_repeats > 0:
        reason = piper_status()
        if reason is not None:
            log(f"piper: skipped ({reason})")
            results["piper"] = {"skipped": reason}
        else:
            log("piper: starting daphne with PiperBackend")
            daphne = await asyncio.to_thread(start, "piper", TTS={"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}})
            try:
                results["piper"] = await phase_piper(daphne, args)
            except Exception as exc:
                results["piper"] = {"failed": f"{type(exc).__name__}: {exc}"}
            finally:
                await finish(daphne)
    return results


def print_report(results: dict, args) -> None:
    print()
    s = results["speak"]
    print(f"== speak() in another process -> first media frame on the client ({s['n']} lines, {args.rate:g}/s, "
          f"{args.streams} streams{f', {args.load} background streams' if args.load else ''}; SilenceBackend, Redis layer) ==")  # fmt: skip
    print(table(
        ["p50 ms", "p90 ms", "p99 ms", "max ms", "missed", "aspeak() p50 ms", "aspeak() p99 ms", "daphne CPU %"],
        [[fmt(s["p50"], ".2f"), fmt(s["p90"], ".2f"), fmt(s["p99"], ".2f"), fmt(s["max"], ".2f"), str(s["missed"]),
          fmt(s["call_p50"], ".2f"), fmt(s["call_p99"], ".2f"), fmt(s["daphne_cpu_pct"], ".0f")]],
    ))  # fmt: skip
    met = s["p99"] is not None and s["p99"] < 10 and not s["missed"]
    print(f"target p99 < 10 ms: {'MET' if met else 'NOT MET'}")
    print()
    print(f"== playback lead and barge-in ({args.barge_trials} trials per lead: ~6 s item, ainterrupt() "
          f"{args.barge_after:g}s after its first frame{f'; {args.load} background streams' if args.load else ''}) ==")  # fmt: skip
    rows = []
    for r in results["barge"]:
        rows.append([
            f"{r['lead']:g}", fmt(r["lead_median_ms"], ".0f"), fmt(r["lead_max_ms"], ".0f"),
            str(r["underruns"]), fmt(r["underrun_ms"], ".0f"),
            fmt(r["stale_ms"], ".0f"), fmt(r["stale_max_ms"], ".0f"), fmt(r["clear_ms"], ".1f"),
            str(r["frames_after_clear"]), fmt(r["first_ms"], ".1f"),
        ])  # fmt: skip
    print(table(
        ["LEAD s", "buffered ahead med ms", "max ms", "underruns", "underrun ms", "stale at clear med ms", "max ms",
         "interrupt->clear ms", "frames after clear", "speak->first ms"],
        rows,
    ))  # fmt: skip
    print()
    p = results.get("piper")
    if p is None:
        print("== Piper: not run (--piper-repeats 0) ==")
    elif "skipped" in p or "failed" in p:
        print(f"== Piper: {'skipped' if 'skipped' in p else 'FAILED'}: {p.get('skipped') or p.get('failed')} ==")
    else:
        print("== Piper (embedded, worker process) time to first audio: speak() -> first frame on the client ==")
        rows = [["cold (worker start + voice load)", f"{len(SHORT_TEXT)}", fmt(p["cold_ms"], ".0f"), "-", "-"]]
        for key, text in (("short", SHORT_TEXT), ("long", LONG_TEXT)):
            v = p[key]
            rows.append([f"{key} sentence", str(len(text)), fmt(pct(v, 50), ".0f"), fmt(min(v) if v else None, ".0f"), fmt(max(v) if v else None, ".0f")])
        print(table(["request", "chars", "median ms", "min ms", "max ms"], rows))
        if p.get("timeouts"):
            print(f"timeouts: {p['timeouts']}")
    print(f"\ndaphne logs: {results['logs']['warnings']} warnings, {results['logs']['errors']} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speaks", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0, help="speak() calls per second (default 5)")
    parser.add_argument("--streams", type=int, default=4, help="live streams the lines go to (default 4)")
    parser.add_argument("--load", type=int, default=0, help="extra real-time streams on each daphne of phases 1 and 2 (default 0)")
    parser.add_argument("--leads", default="0.3,0,2.0", help="PLAYBACK_LEAD_SECONDS values to compare")
    parser.add_argument("--chunk-ms", type=int, default=100, help="PLAYBACK_CHUNK_MS of every daphne (default 100)")
    parser.add_argument("--barge-trials", type=int, default=3)
    parser.add_argument("--barge-after", type=float, default=2.5, help="seconds of playback before the interrupt")
    parser.add_argument("--piper-repeats", type=int, default=5, help="0 skips Piper")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    args.leads = [float(x) for x in args.leads.split(",") if x.strip()]
    raise_nofile()
    prefix = f"benchspeak{run_id()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-speak-"))
    started = time.monotonic()
    try:
        log(f"database bench_mediastream_{prefix}, Redis prefix {prefix}, logs in {workdir}")
        with bench_database(prefix) as database_url:
            setup_django(database_url, prefix)
            results = asyncio.run(run(args, database_url, prefix, workdir))
    finally:
        removed = redis_cleanup(prefix)
        log(f"removed {removed} Redis keys; total {time.monotonic() - started:.0f}s")
    print_report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if args.keep_logs:
        print(f"\nlogs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
