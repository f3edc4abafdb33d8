"""Talking callers per core: embedded Whisper + Piper loaded in each daphne process vs one per-host speech pool.

    .venv/bin/python bench/talking_callers.py                          # K = 2,4; all four set-ups
    .venv/bin/python bench/talking_callers.py --callers 2,4,6 --turns 3 --setups pool-1,pool-2

Set-ups (each with the Redis layer, its own PostgreSQL database, real daphne
processes serving ``bench.asgi``: the production consumer plus a 5 ms event-loop
probe, whose worst wake-up delay shows whether anything heavy ran on the loop):

* ``local-N``: N daphne processes, each loading Whisper base (int8) and
  starting its own Piper worker: the models are held N times;
* ``pool-N``: N daphne processes whose backends point at one ``manage.py
  speech_pool`` (``OPTIONS POOL``; 2 transcription threads, 2 Piper workers):
  the models are held once.

K callers (spread over the N processes) each take ``--turns`` turns: real
speech (``tests.speech_set`` human recordings, through the phone path:
``tests.audio_fixtures.telephone``) into a stream that sends 20 ms frames on an
absolute clock all call long; the final transcript comes back on the call's
events group; this process then ``aspeak``s a reply (Piper, a sentence or two),
waits for its first audio frame on the socket, and for it to finish playing.
Callers start staggered and pause 0.5-1.5 s between turns, as people do.

Figures per row: STT final latency (last speech frame sent -> transcript.final
received) p50/p90; TTS first audio (aspeak -> first media frame) p50/p90;
CPU of every process involved (daphne, its children, the pool and its Piper
workers: utime+stime from /proc) per turn; **talking callers per core** =
conversation seconds of the turns (caller audio + reply audio + pause) / CPU
seconds: how many callers talking like these one core sustains by CPU time,
which the machine's other load changes little; whether the final p90 was
within ``--bound`` (1 s) on this run; the daphne event-loop threads' CPU, the
share of the window they waited for a CPU (schedstat), and the loop probe's
worst delay and stalls over 15 ms (a stall with a high wait share is the
machine, not work on the loop); RSS and PSS per process at the end (PSS splits
shared pages among the processes that map them, so its sum is the real memory).

The machine is shared: CPU time and memory are the figures to trust; the
latencies are wall clock and grow with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # first: bench/settings.py must not shadow the project's settings package

from bench.barge_in import Caller, cpu_seconds, percentile, wait_streams_stopped  # noqa: E402
from bench.common import (  # noqa: E402
    REDIS_URL, Daphne, child_pids, create_database, drop_database, log, migrate, redis_cleanup, rss_bytes,
    runqueue_wait_seconds,
)  # fmt: skip
from bench.common import cpu_seconds as thread_cpu_seconds  # noqa: E402

SETTINGS = "bench.settings"
WHISPER = "mediastream.transcription.whisper.WhisperBackend"
PIPER = "mediastream.tts.piper.PiperBackend"
REPLIES = ["Thank you, I have noted that.", "Got it. Is there anything else I can do for you?", "Sure, one moment."]


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(child_pids(p))
    return out


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for root in pids:
        for p in tree(root):
            try:
                total += cpu_seconds(p)
            except OSError:
                pass
    return total


@dataclass
class Row:
    setup: str
    callers: int
    turns: int = 0
    finals_ms: list[float] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)
    missing: int = 0
    window_s: float = 0.0
    cpu_s: float = 0.0
    memory: list[tuple[str, int, int]] = field(default_factory=list)  # (process, RSS, PSS)
    loop_max_ms: float = 0.0  # the worst event-loop wake-up delay of any daphne (bench consumer's 5 ms probe)
    loop_stalls: int = 0  # probe wake-ups more than 15 ms late, all daphne processes
    talk_s: float = 0.0  # conversation time of the turns: caller audio + reply audio + pause
    loop_cpu_s: float = 0.0  # CPU of the daphne event-loop threads
    loop_wait_s: float = 0.0  # time those threads were runnable but had no CPU (schedstat)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)


class SpeechPool:
    def __init__(self, path: str, log_path: Path) -> None:
        self.path = path
        self._log = open(log_path, "w")
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "speech_pool", "--socket", path, "--stt-workers", "2", "--tts-workers", "2"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.log_path = log_path

    async def ready(self, timeout: float = 300) -> None:  # noqa: ASYNC230
        deadline = time.monotonic() + timeout
        while "Speech pool ready" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("speech pool did not start:\n" + self.log_path.read_text(errors="replace")[-2000:])
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


async def one_caller(caller: Caller, clips, turns: int, rng: random.Random, row: Row, patience: float) -> None:
    from mediastream.api import aspeak

    await asyncio.sleep(rng.uniform(0, 2.0))  # staggered starts
    for turn in range(turns):
        clip = clips[rng.randrange(len(clips))]
        events_since, since = len(caller.events.items), len(caller.tap.items)
        said = caller.sender.say(clip)
        end_at = await said.end
        try:
            index = await caller.events.wait("transcript.final", events_since, patience)
            row.finals_ms.append((caller.events.items[index][0] - end_at) * 1000)
            await said.done
            asked = time.perf_counter()
            item_id = await aspeak(caller.call.call_sid, REPLIES[turn % len(REPLIES)])
            media = await caller.tap.wait("media", since, patience)
            row.first_audio_ms.append((caller.tap.items[media][0] - asked) * 1000)
            index = await caller.events.wait(
                "playback.finished", events_since, 2 * patience, lambda m: m["data"].get("item_id") == item_id
            )
        except TimeoutError:
            row.missing += 1  # counted, and the bound is then "not met"; the caller goes on
            continue
        reply_s = float(caller.events.items[index][1]["data"].get("audio_seconds") or 0.0)
        pause = rng.uniform(0.5, 1.5)
        row.turns += 1
        row.talk_s += len(clip.mulaw) / 8000 + reply_s + pause
        await asyncio.sleep(pause)


async def run_k(
    setup: str, k: int, servers: list[Daphne], pids: list[int], layer, clips, turns, seed, patience: float = 60.0
) -> Row:
    row = Row(setup, k)
    callers = []
    for i in range(k):
        port = servers[i % len(servers)].port
        caller = Caller(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/twilio/media-stream/", layer,
                        random.Random(seed + i), None)  # fmt: skip
        await caller.open()
        callers.append(caller)
    try:
        for server in servers:
            await asyncio.to_thread(server.get, "/bench/reset")
        cpu0, t0 = tree_cpu(pids), time.monotonic()
        loop0 = sum(thread_cpu_seconds(d.pid, d.pid) for d in servers)
        wait0 = sum(runqueue_wait_seconds(d.pid) for d in servers)
        await asyncio.gather(
            *(one_caller(c, clips, turns, random.Random(seed * 100 + i), row, patience) for i, c in enumerate(callers))
        )
        row.cpu_s, row.window_s = tree_cpu(pids) - cpu0, time.monotonic() - t0
        row.loop_cpu_s = sum(thread_cpu_seconds(d.pid, d.pid) for d in servers) - loop0
        row.loop_wait_s = sum(runqueue_wait_seconds(d.pid) for d in servers) - wait0
        for server in servers:
            stats = await asyncio.to_thread(server.get, "/bench/stats")
            row.loop_max_ms = max(row.loop_max_ms, stats["probe_max_ms"])
            row.loop_stalls += stats["stall_count"]
        row.load = os.getloadavg()
        for root in pids:
            for p in tree(root):
                try:
                    name = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    label = "piper_worker" if "piper_worker" in name else "speech_pool" if "speech_pool" in name else "daphne"
                    row.memory.append((f"{label} {p}", rss_bytes(p), pss_bytes(p)))
                except OSError:
                    pass
    finally:
        for caller in callers:
            await caller.hang_up()
        await wait_streams_stopped([c.stream.stream_sid for c in callers if c.stream])
    return row


async def run_setup(setup: str, args, database_url: str, prefix: str, logdir: Path, clips) -> list[Row]:
    from channels.layers import get_channel_layer

    kind, n = setup.split("-")
    pool = None
    options: dict = {}
    if kind == "pool":
        path = str(logdir / "speech.sock")
        pool = SpeechPool(path, logdir / "pool.log")
        await pool.ready()
        options = {"POOL": path}
    overrides = {
        "TRANSCRIPTION": {"BACKEND": WHISPER, "OPTIONS": dict(options)},
        "TTS": {"BACKEND": PIPER, "OPTIONS": dict(options)},
        "MAX_PENDING_CONNECTIONS_PER_IP": 256,
        "MAX_PENDING_CONNECTIONS": 256,
    }
    rows = []
    servers: list[Daphne] = []
    try:
        for i in range(int(n)):
            servers.append(await asyncio.to_thread(
                Daphne, database_url=database_url, prefix=prefix, overrides=overrides,
                log_path=logdir / f"daphne-{setup}-{i}.log",
            ))  # fmt: skip
        pids = [server.pid for server in servers] + ([pool.proc.pid] if pool else [])
        layer = get_channel_layer()
        log(f"{setup}: daphne pids {[s.pid for s in servers]}{f', pool {pool.proc.pid}' if pool else ''}; warming up")
        await run_k(setup, len(servers), servers, pids, layer, clips, 1, seed=args.seed, patience=300)  # loads models
        for k in args.callers:
            log(f"{setup}: K={k}, {args.turns} turns each")
            row = await run_k(setup, k, servers, pids, layer, clips, args.turns, seed=args.seed + k)
            rows.append(row)
            print_row(row, args.bound)
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
        if pool is not None:
            pool.stop()
    return rows


def fmt(value, spec=".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_row(row: Row, bound_ms: float) -> None:
    p90 = percentile(row.finals_ms, 90)
    met = p90 is not None and p90 <= bound_ms and not row.missing
    # CPU-time capacity: conversation seconds one core-second of CPU carries, i.e. how many
    # callers talking like these one core sustains, whatever else the machine runs.
    per_core = row.talk_s / row.cpu_s if row.cpu_s else None
    daphne = [m for m in row.memory if m[0].startswith("daphne")]
    servers = max(1, len(daphne))
    print(
        f"{row.setup:8} K={row.callers:<3} turns={row.turns:<3} missing={row.missing} "
        f"CPU/turn={row.cpu_s / max(1, row.turns) * 1000:.0f} ms talking callers/core={fmt(per_core, '.1f')} "
        f"final p50/p90={fmt(percentile(row.finals_ms, 50))}/{fmt(p90)} ms (bound {'met' if met else 'NOT met'}) "
        f"tts first audio p50/p90={fmt(percentile(row.first_audio_ms, 50))}/{fmt(percentile(row.first_audio_ms, 90))} ms "
        f"loop thread CPU={row.loop_cpu_s / row.window_s / servers * 100:.0f}% waited-for-CPU="
        f"{row.loop_wait_s / row.window_s / servers * 100:.0f}% probe max={row.loop_max_ms:.0f} ms stalls>15ms={row.loop_stalls} "
        f"RSS/daphne={fmt(sum(m[1] for m in daphne) / servers / 2**20)} MiB "
        f"PSS total={fmt(sum(m[2] for m in row.memory) / 2**20)} MiB "
        f"load={' '.join(f'{x:.1f}' for x in row.load)}",
        flush=True,
    )
    for name, rss, pss in row.memory:
        print(f"    {name:22} RSS {rss / 2**20:7.0f} MiB  PSS {pss / 2**20:7.0f} MiB")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="local-1,pool-1,local-2,pool-2")
    parser.add_argument("--callers", default="2,4", help="K values, comma-separated")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--bound", type=float, default=1000.0, help="STT final p90 bound, ms")
    parser.add_argument("--max-clip-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    args.setups = [s for s in args.setups.split(",") if s]
    args.callers = [int(k) for k in args.callers.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    run = f"{os.getpid()}x{secrets.token_hex(3)}"
    prefix = f"bench-talking-{run}-"
    db_name = f"bench_talking_{run}"
    logdir = Path(tempfile.mkdtemp(prefix="bench-talking-"))
    rows: list[Row] = []
    try:
        database_url = create_database(db_name)
        migrate(database_url, prefix)  # bench.settings, as the daphne processes
        os.environ.update(
            DJANGO_SETTINGS_MODULE=SETTINGS, DATABASE_URL=database_url, REDIS_URL=REDIS_URL, CHANNEL_LAYER_PREFIX=prefix
        )
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        import django

        django.setup()
        from tests.audio_fixtures import SpeechClip, _speech_bounds
        from tests.speech_set import human_clips

        clips = []
        for clip in human_clips():
            if clip.seconds <= args.max_clip_seconds:
                onset, end = _speech_bounds(clip.mulaw)
                clips.append(SpeechClip(text=clip.text, mulaw=clip.mulaw, onset_ms=onset, end_ms=end))
        log(f"{len(clips)} real speech clips of at most {args.max_clip_seconds:g} s; load {os.getloadavg()}")

        async def all_setups():
            async with asyncio.timeout(args.max_seconds):
                for setup in args.setups:
                    rows.extend(await run_setup(setup, args, database_url, prefix, logdir, clips))

        asyncio.run(all_setups())
    finally:
        drop_database(db_name)
        redis_cleanup(prefix)
        if args.keep_logs:
            log(f"logs in {logdir}")
    print()
    print(f"Talking callers (STT final p90 bound {args.bound:.0f} ms), {args.turns} turns per caller")
    for row in rows:
        print_row(row, args.bound)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
