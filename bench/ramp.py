"""A ramp of new calls: how many are admitted, and how soon each hears its greeting.

    .venv/bin/python bench/ramp.py --streams 300 --rate 50

One daphne (``bench.asgi``) on a database and Redis prefix of its own, with the
dummy speech backends (TTS ``SilenceBackend``, transcription discard) and
``MEDIASTREAM["STREAM_GREETING"]`` set. This process plays Twilio: ``--streams``
calls, one every 1/``--rate`` seconds, each through the signed voice webhook,
the signed upgrade from one of ``--sources`` loopback addresses (Twilio's media
servers are a few addresses, and the pending caps count per address),
``connected`` and ``start``, then real-time caller silence (the ticker of
``bench.loadgen``) until the end. For each stream it records whether it was
admitted (the greeting's first audio frame arrived) or refused (its close code),
and the time from writing ``start`` to the arrival of that first frame.

The server keeps the shipped admission guards (``MAX_PENDING_CONNECTIONS``,
``MAX_PENDING_CONNECTIONS_PER_IP``, ``PRE_START_TIMEOUT``) except
``MAX_CONNECTIONS``, raised to fit ``--streams``. ``--env KEY=VALUE`` passes
settings to the server's environment (e.g. ``CONN_MAX_AGE=0``, ``DB_POOL=0``),
``--override KEY=JSON`` a ``MEDIASTREAM`` setting (e.g. ``MAX_PENDING_CONNECTIONS_PER_IP=64``).
The peak number of the server's PostgreSQL sessions is sampled too.
``--webhooks separate`` serves the voice webhooks from a second daphne (the same
database and Redis), as a deployment that routes Twilio's HTTP requests to
other processes than its media streams would; the streams' daphne is the one
measured. Each run prints the rate at which streams really started (a stream
starts once its webhook has answered).

The server runs ``MediaStreamConsumer`` itself and the callers send media as
Twilio does (``BENCH_CONSUMER=plain``), so its CPU is production's; ``--lag``
serves the bench consumer instead, which also times every inbound frame from
the client's write to its handling (about an eighth more server CPU at 300
streams). ``--stalls`` prints the server's event-loop stalls per second and
what its loop thread was doing while late (sampled from another thread). This
process runs without garbage-collector passes while it plays the callers, so
its own pauses do not show up as the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    key_json_pairs,
    AUTH_TOKEN,
    PG_ADMIN_DSN,
    PUBLIC_BASE_URL,
    Daphne,
    bench_database,
    bench_overrides,
    cpu_seconds,
    log,
    machine_cpu,
    machine_steal,
    raise_nofile,
    redis_cleanup,
    run_id,
    table,
)

GREETING = "Hello, thanks for calling. How can I help you today?"
FRAME = 0.02
GOLDEN = 0.6180339887498949


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]  # nearest rank


@dataclass
class Attempt:
    index: int
    source: str
    webhook_s: float | None = None
    start_sent: float | None = None
    first_audio: float | None = None
    close_code: int | None = None
    error: str = ""

    @property
    def latency_ms(self) -> float | None:
        if self.start_sent is None or self.first_audio is None:
            return None
        return (self.first_audio - self.start_sent) * 1000


class PostgresSessions:
    """Samples how many sessions the server holds on its database (pg_stat_activity), in a thread."""

    def __init__(self, database: str, interval: float = 0.25) -> None:
        self.database = database
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PostgresSessions:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.database]).fetchone()
                self.peak = max(self.peak, row[0])


async def ramp(server_url: str, args, server_stats=None, webhook_url: str | None = None) -> tuple[list[Attempt], dict]:
    from websockets.asyncio.client import connect

    from bench.loadgen import BenchStream, Generator
    from mediastream.simulator import TwilioCall, sign, stream_urls

    class RampStream(BenchStream):
        """A bench stream whose socket comes from a given loopback source address."""

        source = "127.0.0.1"

        async def connect(self, open_timeout: float = 10) -> None:
            headers = {"X-Twilio-Signature": sign(self.auth_token, self.signed_url)}
            self.ws = await connect(
                self.connect_url,
                additional_headers=headers,
                open_timeout=open_timeout,
                max_size=2**22,
                compression=None,
                local_addr=(self.source, 0),
            )
            self._reader = asyncio.create_task(self._read(), name=f"sim-reader:{self.stream_sid}")

    import httpx

    client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100))

    class RampCall(TwilioCall):
        """The voice webhook over one shared HTTP client (a client per request costs the bench more CPU than the server)."""

        async def post(self, path: str, params: dict[str, str]) -> httpx.Response:
            signature = sign(self.auth_token, self.public_url.rstrip("/") + path, params)
            return await client.post((webhook_url or server_url) + path, data=params, headers={"X-Twilio-Signature": signature})

    gen = Generator(server_url, 0, 1, "silence", plain=not args.lag)
    loop = asyncio.get_running_loop()
    sources = [f"127.0.0.{2 + i}" for i in range(args.sources)]
    attempts = [Attempt(i, sources[i % len(sources)]) for i in range(args.streams)]
    heard: dict[int, asyncio.Future] = {}

    async def one(attempt: Attempt) -> None:
        try:
            call = RampCall(server_url=server_url, public_url=PUBLIC_BASE_URL, auth_token=AUTH_TOKEN)
            t0 = time.perf_counter()
            instructions = await call.answer()
            attempt.webhook_s = time.perf_counter() - t0
            connect_url, signed_url = stream_urls(PUBLIC_BASE_URL, server_url, instructions.url)
            stream = RampStream(
                connect_url,
                signed_url=signed_url,
                auth_token=AUTH_TOKEN,
                call_sid=call.call_sid,
                parameters=instructions.parameters,
            )
            stream.source = attempt.source
            first = heard[attempt.index] = loop.create_future()

            def on_message(message: dict, now: float) -> None:
                if message.get("event") == "media" and not first.done():
                    first.set_result(now)

            stream.on_message = on_message
            await stream.connect()
            await stream.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            attempt.start_sent = time.perf_counter()
            await stream.start(connected=False)
        except Exception as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"[:160]
            return
        # Real-time caller audio from now on, as Twilio sends it.
        index = len(gen.streams)
        gen.streams.append(stream)
        phase = ((attempt.index * GOLDEN) % 1.0) * FRAME
        k = int((loop.time() - gen.t0 - phase) / FRAME) + 1
        heapq.heappush(gen.heap, (gen.t0 + phase + k * FRAME, index))
        closed = asyncio.ensure_future(stream.closed.wait())
        await asyncio.wait({first, closed}, timeout=args.first_audio_timeout, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        if first.done():
            attempt.first_audio = first.result()
        else:
            attempt.close_code = stream.close_code
            if attempt.close_code is None:
                attempt.error = f"no greeting audio within {args.first_audio_timeout:.0f}s"

    started = time.perf_counter()
    tasks = []
    for attempt in attempts:
        due = started + attempt.index / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(attempt)))
    await asyncio.gather(*tasks)
    ramp_s = time.perf_counter() - started
    log(f"ramp done in {ramp_s:.1f}s; holding {args.hold:.0f}s")
    await asyncio.sleep(args.hold)
    gen_stats = gen.stats()
    lag = (await asyncio.to_thread(server_stats)) if server_stats else {}
    stopped = await gen.stop()
    await client.aclose()
    return attempts, {"ramp_s": ramp_s, "generator": gen_stats, "stop": stopped, "server_lag": lag}


def report(attempts: list[Attempt], extra: dict, args) -> dict:
    admitted = [a for a in attempts if a.first_audio is not None]
    refused: dict[str, int] = {}
    for a in attempts:
        if a.first_audio is None:
            key = str(a.close_code) if a.close_code is not None else (a.error.split(":")[0] or "?")
            refused[key] = refused.get(key, 0) + 1
    latencies = [a.latency_ms for a in admitted]
    webhooks = [a.webhook_s * 1000 for a in attempts if a.webhook_s is not None]
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    starts = sorted(a.start_sent for a in attempts if a.start_sent is not None)
    start_rate = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 and starts[-1] > starts[0] else None
    summary = {
        "streams": len(attempts),
        "rate": args.rate,
        "sources": args.sources,
        "admitted": len(admitted),
        "refused": refused,
        "webhook_ms": {"p50": pct(webhooks, 50), "p99": pct(webhooks, 99)},
        "start_rate": start_rate,
        **extra,
    }
    summary["first_audio_ms"] = {
        "p50": pct(latencies, 50),
        "p90": pct(latencies, 90),
        "p99": pct(latencies, 99),
        "max": max(latencies, default=None),
    }
    print(
        f"\n{len(attempts)} streams at {args.rate:g}/s from {args.sources} source addresses "
        f"(ramp took {extra['ramp_s']:.1f}s), greeting {GREETING!r}; voice webhooks served by "
        f"{'a second daphne' if args.webhooks == 'separate' else 'the same daphne'}\n"
        f"streams started (start written, after each webhook answered): {len(starts)} at "
        f"{fmt(start_rate)}/s from the first to the last\n"
    )
    first = summary["first_audio_ms"]
    print(
        table(
            ["admitted", "refused (close code: count)", "first audio p50 ms", "p90", "p99", "max", "webhook p50 ms", "p99"],
            [
                [
                    str(len(admitted)),
                    ", ".join(f"{k}: {v}" for k, v in sorted(refused.items())) or "none",
                    fmt(first["p50"]),
                    fmt(first["p90"]),
                    fmt(first["p99"]),
                    fmt(first["max"]),
                    fmt(summary["webhook_ms"]["p50"]),
                    fmt(summary["webhook_ms"]["p99"]),
                ]
            ],
        )
    )
    server = extra["server"]
    print(
        f"\nserver CPU during the ramp {server['cpu_pct']:.0f} % of one core"
        + (f" (the webhook daphne {server['webhook_cpu_pct']:.0f} %)" if "webhook_cpu_pct" in server else "")
        + f"; machine busy {server['machine_pct']:.0f} % (stolen by the hypervisor {server['steal_pct']:.1f} %); "
        f"peak PostgreSQL sessions of the server {server['pg_sessions_peak']}; "
        f"log: {server['log']['warnings']} warnings, {server['log']['errors']} errors; "
        f"bench process CPU {100 * extra['generator']['cpu_s'] / extra['generator']['wall_s']:.0f} %, "
        f"its caller-audio frames late p99 {extra['generator'].get('late_p99')} ms; "
        f"load average before the run {server['load_average_before'][0]:.2f}"
    )
    if admitted:
        print(
            f"server CPU per admitted call, everything included (webhook, handshake, admission, greeting, caller "
            f"audio until the bench hangs up): {1000 * server['cpu_s'] / len(admitted):.0f} ms"
        )
    lag = extra.get("server_lag") or {}
    frames = lag.get("lag_ms") or {}
    if frames.get("count"):  # --lag: the bench consumer timed every frame
        print(
            f"server: inbound media frames handled p50 {frames.get('p50')} / p99 {frames.get('p99')} / max "
            f"{frames.get('max')} ms after they were written (from the ramp's start to its end + hold)"
        )
    if "stall_count" in lag:
        print(f"server: event-loop stalls over 15 ms: {lag['stall_count']}, longest {lag.get('probe_max_ms')} ms")
        if args.stalls:
            per_second: dict[int, list[float]] = {}
            for at, late in lag["stalls"]:
                per_second.setdefault(int(at), []).append(late)
            for second, lates in sorted(per_second.items()):
                print(f"  second {second:3d}: {len(lates):3d} stalls, {sum(lates):6.0f} ms late in all, longest {max(lates):.0f}")
    if lag.get("gc"):
        print(
            "server: garbage-collector pauses "
            + ", ".join(f"{g} {v['count']} runs, longest {v['max_ms']} ms" for g, v in sorted(lag["gc"].items()))
        )
    sampled = lag.get("stall_stacks")
    if sampled:  # --stalls
        print(f"server: the event-loop thread's stack while the loop was over 30 ms late, {sampled['samples']} samples:")
        for name, count in sampled["leaves"]:
            print(f"  {count:5d}  {name}")
        for stack, count in sampled["stacks"]:
            print(f"  {count:5d}  {stack}")
    errors = sorted({a.error for a in attempts if a.error})
    if errors:
        print("client errors: " + "; ".join(errors[:5]))
    return summary


@contextlib.contextmanager
def collector_paused():
    """No garbage-collector pass in the bench's own process while it plays the callers (as ``timeit`` does).

    A full pass over 300 callers' objects stalls the bench's loop for tens of milliseconds, and its callers' frames
    and the first-audio timestamps would then be late by the bench's pause, not the server's.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def start_profile(args, pid: int, workdir: Path):
    if not args.py_spy:
        return None
    seconds = int(args.streams / args.rate + args.hold + 2)
    cmd = [args.py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200", "--threads",
           "--format", "raw", "--output", str(workdir / "profile.txt"), "--nonblocking", "--gil"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_profile(profiler, workdir: Path, top: int = 25) -> str:
    """The functions daphne's threads were in most (inclusive), from py-spy's collapsed stacks."""
    if profiler is None:
        return ""
    profiler.wait(120)
    path = workdir / "profile.txt"
    if not path.exists():
        return "(py-spy wrote nothing)"
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    rows = sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
    return "\n".join(f"{100 * n / max(1, total):5.1f} %  {frame[:150]}" for frame, n in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="new streams per second (default 50)")
    parser.add_argument("--sources", type=int, default=8, help="loopback source addresses of the sockets (default 8)")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds all streams stay up after the ramp (default 5)")
    parser.add_argument("--first-audio-timeout", type=float, default=15.0)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment (repeatable)")
    parser.add_argument("--override", action="append", default=[], help="KEY=JSON: a MEDIASTREAM setting of the server (repeatable)")
    parser.add_argument("--py-spy", help="py-spy executable: profile daphne during the ramp and print where it spent its time")
    parser.add_argument("--webhooks", choices=["same", "separate"], default="same",
                        help="serve the voice webhooks from the streams' daphne (default) or a second daphne, as a "
                             "deployment that routes them to other processes would")  # fmt: skip
    parser.add_argument("--lag", action="store_true", help="time every inbound frame in the server (the bench consumer)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--stalls",
        action="store_true",
        help="print the event-loop stalls per second of the run and the loop thread's stacks while it was late",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the daphne log (printed path)")
    args = parser.parse_args()
    if args.stalls:
        os.environ["BENCH_STALL_STACKS"] = "1"
    for pair in args.env:
        key, _, value = pair.partition("=")
        os.environ[key] = value
    if not args.lag:
        os.environ["BENCH_CONSUMER"] = "plain"
    raise_nofile()
    prefix = f"benchramp{run_id()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-ramp-"))
    overrides = bench_overrides(
        MAX_CONNECTIONS=args.streams + 100,
        TTS={"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {}},
        STREAM_GREETING=GREETING,
    )
    for key in ("MAX_PENDING_CONNECTIONS", "MAX_PENDING_CONNECTIONS_PER_IP", "PRE_START_TIMEOUT"):
        overrides.pop(key)  # the shipped guards
    overrides.update(key_json_pairs(args.override))
    try:
        with bench_database(prefix) as database_url:
            database = database_url.rsplit("/", 1)[1]
            log(f"database {database}, Redis prefix {prefix}, log in {workdir}")
            daphne = Daphne(database_url=database_url, prefix=prefix, overrides=overrides, log_path=workdir / "daphne.log")
            hooks = None
            try:
                if args.webhooks == "separate":
                    hooks = Daphne(
                        database_url=database_url, prefix=prefix, overrides=overrides, log_path=workdir / "webhooks.log"
                    )
                    hooks.get("/bench/stats")
                daphne.get("/bench/stats")
                load_before = os.getloadavg()
                busy0, total0 = machine_cpu()
                steal0, _ = machine_steal()
                cpu0, wall0 = cpu_seconds(daphne.pid), time.monotonic()
                hooks_cpu0 = cpu_seconds(hooks.pid) if hooks else 0.0
                profiler = start_profile(args, daphne.pid, workdir)
                with PostgresSessions(database) as sessions, collector_paused():
                    daphne.get("/bench/reset")
                    attempts, extra = asyncio.run(
                        ramp(daphne.http, args, lambda: daphne.get("/bench/stats"), hooks.http if hooks else None)
                    )
                    busy1, total1 = machine_cpu()
                    steal1, _ = machine_steal()
                    cpu1, wall1 = cpu_seconds(daphne.pid), time.monotonic()
                    hooks_cpu1 = cpu_seconds(hooks.pid) if hooks else 0.0
                profile = finish_profile(profiler, workdir)
                daphne.drain(30)
            finally:
                daphne.stop()
                if hooks:
                    hooks.stop()
            extra["server"] = {
                "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
                "cpu_s": cpu1 - cpu0,
                "machine_pct": 100 * (busy1 - busy0) / max(1, total1 - total0),
                "steal_pct": 100 * (steal1 - steal0) / max(1, total1 - total0),
                "pg_sessions_peak": sessions.peak,
                "log": daphne.log_counts(),
                "load_average_before": load_before,
            }
            if hooks:
                extra["server"]["webhook_cpu_pct"] = 100 * (hooks_cpu1 - hooks_cpu0) / (wall1 - wall0)
    finally:
        redis_cleanup(prefix)
    summary = report(attempts, extra, args)
    if profile:
        print(f"\n== where daphne spent the ramp (py-spy, shares of the samples that held the GIL) ==\n{profile}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    if args.keep_logs:
        print(f"\ndaphne log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
