"""How many real-time Twilio media streams one daphne process handles.

    .venv/bin/python bench/stream_load.py --sweep 50,100,200,300

For each mode (VAD off / on; silence or speech-like noise from the caller) one
daphne process serves ``bench.asgi:application`` (the real consumer, timed:
see ``bench/consumer.py``) with the discarding transcription backend, a fresh
PostgreSQL database and a unique Redis channel-layer prefix. A load generator
child process opens streams through the signed voice webhook and the signed
upgrade, and sends 50 frames/s of 160-byte mu-law per stream paced to an
absolute clock. The stream count steps through the sweep (streams are added,
never reopened); after each step settles, one window of ``--seconds`` is
measured:

* lag p50/p99/max: client send -> consumer handler start, per frame;
* handler p50/p99: time inside ``MediaStreamConsumer.websocket_receive``;
* daphne CPU (% of one core, ms per stream-second), RSS total and per stream;
* frames sent / handled in the window, generator lateness, closes.

Everything it starts (daphne, generator, database, Redis keys) is removed at
the end. Target: >= 300 streams per process with p99 lag < 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    PYTHON,
    ROOT,
    Daphne,
    bench_database,
    bench_overrides,
    cpu_seconds,
    ctx_switches,
    fault_counts,
    fmt,
    log,
    machine_cpu,
    raise_nofile,
    redis_cleanup,
    rss_bytes,
    run_id,
    runqueue_wait_seconds,
    table,
    thread_count,
)

MODES = {
    "vad-off": {"vad": False, "audio": "silence"},
    "vad-on": {"vad": True, "audio": "silence"},
    "vad-off-noise": {"vad": False, "audio": "noise"},
    "vad-on-noise": {"vad": True, "audio": "noise"},
}
TARGET_P99_MS = 20.0
MIB = 1024 * 1024


class Worker:
    """One load-generator child (``python -m bench.loadgen``), driven by JSON lines."""

    def __init__(self, server: str, worker_id: int, workers: int, audio: str, env: dict, extra: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "bench.loadgen", "--server", server, "--worker-id", str(worker_id), "--workers", str(workers), "--audio", audio, *extra],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._read(60)
        self.pid = ready["pid"]

    def _read(self, timeout: float) -> dict:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise TimeoutError("load generator did not answer in time")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.poll()})")
        return json.loads(line)

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, cmd: dict, timeout: float = 60) -> dict:
        self.send(cmd)
        return self._read(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_streaming(daphne: Daphne, want: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    snap = daphne.get("/bench/stats", timeout=30)
    while snap["streaming"] < want and time.monotonic() < deadline:
        time.sleep(0.25)
        snap = daphne.get("/bench/stats", timeout=30)
    return snap


def pyspy_window(pyspy: str, pid: int, seconds: float, out: Path) -> str:
    subprocess.run(
        [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 60,
    )  # fmt: skip
    return summarize_collapsed(out)


#: Where a py-spy sample of daphne falls: the first category whose test matches its stack.
CATEGORIES = [
    ("other threads (DB executor, ...)", lambda st, leaf: "Thread.run (" in st or "_worker (concurrent" in st),
    ("event loop: select() (waiting for sockets)", lambda st, leaf: leaf.startswith("EpollSelector.select (")),
    ("app: MediaStreamConsumer.websocket_receive", lambda st, leaf: "MediaStreamConsumer.websocket_receive (" in st),
    ("bench: BenchConsumer timing wrapper", lambda st, leaf: "BenchConsumer.websocket_receive (" in st),
    ("daphne/Twisted/autobahn: read + ws frame + queue put",
     lambda st, leaf: any(m in st for m in ("_readOrWrite (", "callWithLogger (", "callWithContext (", "autobahn/"))),
    ("channels_redis / redis-py", lambda st, leaf: "channels_redis/" in st or "/redis/" in st),
    ("channels: await_many_dispatch (per-message task + asyncio.wait)",
     lambda st, leaf: any(m in st for m in (
         "await_many_dispatch (", "_wait (asyncio/tasks", "wait (asyncio/tasks", "_on_completion", "wait.<locals>",
         "Queue.get (asyncio/queues", "ProtocolTypeRouter.__call__", "URLRouter.__call__", "as_asgi.<locals>",
     ))),  # fmt: skip
    ("app: other (announcer, player, heartbeat)", lambda st, leaf: "mediastream/" in st),
    ("event loop: other (scheduling, timers)", lambda st, leaf: True),
]


def categorize(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1]
    for name, test in CATEGORIES:
        if test(stack, leaf):
            return name
    return "other"


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Shares per component, and self/inclusive shares per function, from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    cats: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_strip_line(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
        cat = categorize(stack)
        cats[cat] = cats.get(cat, 0) + n
    if not total:
        return "(no samples)"
    lines = [f"py-spy: {total} samples of daphne (all threads)", "", "share %  component"]
    for name, n in sorted(cats.items(), key=lambda kv: -kv[1]):
        lines.append(f"{100 * n / total:6.1f}   {name}")
    lines += ["", "self %   function"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:6.1f}   {name}")
    lines += ["", "incl %   function"]
    for name, n in sorted(incl.items(), key=lambda kv: -kv[1])[: top + 10]:
        lines.append(f"{100 * n / total:6.1f}   {name}")
    return "\n".join(lines)


def _strip_line(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    if "(" in frame and frame.endswith(")"):
        name, _, where = frame.partition(" (")
        where = where[:-1].rsplit(":", 1)[0]
        parts = where.split("/")
        where = "/".join(parts[-2:])
        return f"{name} ({where})"
    return frame


def cprofile_window(daphne: Daphne, seconds: float, out: Path) -> str:
    import io
    import pstats

    daphne.get("/bench/profile/start")
    time.sleep(seconds)
    daphne.get(f"/bench/profile/stop?out={out}", timeout=60)
    buf = io.StringIO()
    stats = pstats.Stats(str(out), stream=buf)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


def run_mode(mode: str, args, database_url: str, prefix: str, workdir: Path) -> tuple[list[dict], str]:
    spec = MODES[mode]
    overrides = bench_overrides(
        VAD={"ENABLED": spec["vad"]},
        TTS={"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {}},
        # One heartbeat write per stream per 30 s is the production default; keep it.
    )
    log(f"mode {mode}: starting daphne")
    daphne = Daphne(
        database_url=database_url,
        prefix=prefix,
        overrides=overrides,
        log_path=workdir / f"{args.server}-{mode}.log",
        server=args.server,
        uvicorn_bin=args.uvicorn,
    )
    workers: list[Worker] = []
    rows: list[dict] = []
    profile_text = ""
    try:
        daphne.get("/bench/stats")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "bench.settings"}
        # Warm-up: two short streams load everything a stream loads lazily (DB
        # connection, backends, VAD model), so the baseline RSS is per-process only.
        warm = Worker(daphne.http, 0, 1, spec["audio"], env)
        try:
            warm.ask({"cmd": "open", "n": 2, "first_index": 10_000}, 60)
            time.sleep(1.0)
            warm.ask({"cmd": "stop"}, 60)
        finally:
            warm.kill()
        time.sleep(0.5)
        base_rss = rss_bytes(daphne.pid)
        log(f"mode {mode}: daphne RSS after warm-up {base_rss / MIB:.0f} MiB")
        workers = [Worker(daphne.http, i, args.workers, spec["audio"], env) for i in range(args.workers)]
        current = 0
        prev_rss = base_rss
        for n in args.sweep:
            add = n - current
            if add > 0:
                log(f"mode {mode}: opening {add} more streams (-> {n})")
                t_open = time.monotonic()
                shares = [add // len(workers) + (1 if i < add % len(workers) else 0) for i in range(len(workers))]
                first = current
                for w, share in zip(workers, shares):
                    w.send({"cmd": "open", "n": share, "first_index": first})
                    first += share
                opened = [w._read(600) for w in workers]
                failed = sum(o["failed"] for o in opened)
                if failed:
                    log(f"  {failed} streams failed to open: {[e for o in opened for e in o['errors']][:3]}")
                current += add - failed
                snap = wait_streaming(daphne, current)
                log(f"  {snap['streaming']} streaming after {time.monotonic() - t_open:.1f}s")
            time.sleep(args.settle)
            cpu0 = cpu_seconds(daphne.pid)
            loop0 = cpu_seconds(daphne.pid, daphne.pid)
            wait0 = runqueue_wait_seconds(daphne.pid)
            faults0 = fault_counts(daphne.pid)
            ctx0 = ctx_switches(daphne.pid)
            busy0, total0 = machine_cpu()
            t0 = time.monotonic()
            daphne.get("/bench/reset", timeout=30)
            for w in workers:
                w.send({"cmd": "reset"})
            for w in workers:
                w._read(30)
            time.sleep(args.seconds)
            server = daphne.get("/bench/stats", timeout=30)
            t1 = time.monotonic()
            cpu1 = cpu_seconds(daphne.pid)
            loop1 = cpu_seconds(daphne.pid, daphne.pid)
            wait1 = runqueue_wait_seconds(daphne.pid)
            faults1 = fault_counts(daphne.pid)
            ctx1 = ctx_switches(daphne.pid)
            busy1, total1 = machine_cpu()
            gen = [w.ask({"cmd": "stats"}, 30) for w in workers]
            rss = rss_bytes(daphne.pid)
            wall = t1 - t0
            streams = server["streaming"]
            row = {
                "mode": mode,
                "n": n,
                "streaming": streams,
                "lag_p50": server["lag_ms"]["p50"],
                "lag_p99": server["lag_ms"]["p99"],
                "lag_p999": server["lag_ms"]["p99.9"],
                "lag_max": server["lag_ms"]["max"],
                "over_20ms": server["lag_ms"]["over_20ms"],
                "handler_p50": server["handler_ms"]["p50"],
                "handler_p99": server["handler_ms"]["p99"],
                "handler_mean": server["handler_ms"]["mean"],
                "cpu_pct": 100 * (cpu1 - cpu0) / wall,
                "loop_cpu_pct": 100 * (loop1 - loop0) / wall,
                "cpu_ms_per_stream_s": 1000 * (cpu1 - cpu0) / (streams * wall) if streams else None,
                "rss_mib": rss / MIB,
                "rss_per_stream_mib": (rss - base_rss) / MIB / streams if streams else None,
                "rss_marginal_mib": (rss - prev_rss) / MIB / add if add > 0 else None,
                "threads": thread_count(daphne.pid),
                "machine_busy_pct": 100 * (busy1 - busy0) / max(1, total1 - total0),
                "runqueue_wait_pct": 100 * (wait1 - wait0) / wall,
                "sent": sum(g["sent"] for g in gen),
                "handled": server["lag_ms"]["count"],
                "expected": int(round(streams * 50 * args.seconds)),
                "gen_cpu_pct": 100 * sum(g["cpu_s"] for g in gen) / wall,
                "gen_late_p99": max((g["late_p99"] or 0) for g in gen),
                "gen_late_max": max(g["late_max"] for g in gen),
                "closed": sum(g["closed"] for g in gen),
                "close_codes": _merge([g["close_codes"] for g in gen]),
                "clears": sum(g["clears_received"] for g in gen),
                "before_start": server["app_media_before_start"],
                "lag_max_per_100ms": server["lag_max_per_100ms"],
                "gc": server["gc"],
                "minor_faults": faults1[0] - faults0[0],
                "major_faults": faults1[1] - faults0[1],
                "involuntary_ctx": ctx1[1] - ctx0[1],
                "probe_max_ms": server["probe_max_ms"],
                "loop_stalls": server["stalls"],
                "stall_buckets": sum(1 for v in server["lag_max_per_100ms"] if v > TARGET_P99_MS),
            }
            prev_rss = rss
            rows.append(row)
            log(
                f"  N={n}: lag p50 {fmt(row['lag_p50'], '.2f')} p99 {fmt(row['lag_p99'], '.2f')} ms, "
                f"daphne CPU {row['cpu_pct']:.0f}% (event-loop thread {row['loop_cpu_pct']:.0f}%, waited for a CPU {row['runqueue_wait_pct']:.0f}%), "
                f"machine busy {row['machine_busy_pct']:.0f}% of {os.cpu_count()} CPUs, gen CPU {row['gen_cpu_pct']:.0f}%, "
                f"sent {row['sent']} handled {row['handled']}, closed {row['closed']}, gc {server['gc']}"
            )
        if args.profile != "none":
            out = workdir / f"profile-{mode}.{'prof' if args.profile == 'cprofile' else 'txt'}"
            log(f"mode {mode}: profiling daphne ({args.profile}) for {args.profile_seconds:g}s at N={current}")
            if args.profile == "cprofile":
                profile_text = cprofile_window(daphne, args.profile_seconds, out)
            else:
                profile_text = pyspy_window(args.py_spy, daphne.pid, args.profile_seconds, out)
        log(f"mode {mode}: stopping {current} streams")
        for w in workers:
            w.send({"cmd": "stop"})
        for w in workers:
            try:
                result = w._read(120)
                log(f"  generator {w.pid}: {result}")
            except Exception as exc:
                log(f"  generator {w.pid} did not stop cleanly: {exc}")
        left = daphne.drain()
        if left:
            log(f"  {left} consumers still tearing down when daphne is stopped")
    finally:
        for w in workers:
            w.kill()
        code = daphne.stop()
        counts = daphne.log_counts()
        log(f"mode {mode}: daphne exited {code}; log {daphne.log_path}: {counts['warnings']} warnings, {counts['errors']} errors")
        for row in rows:
            row["log_warnings"] = counts["warnings"]
            row["log_errors"] = counts["errors"]
    return rows, profile_text


def _merge(dicts: list[dict]) -> dict:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _us(ms) -> str:
    return "-" if ms is None else f"{ms * 1000:.0f}us"


def print_report(rows: list[dict], args) -> None:
    print()
    print(f"stream_load ({args.server}{', pump dispatch' if args.dispatch == 'pump' else ''}): {args.seconds:g}s window per step, "
          f"{args.workers} load-generator process(es), {os.cpu_count()} CPUs, "
          f"target p99 lag < {TARGET_P99_MS:g} ms at >= 300 streams")  # fmt: skip
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mrows = [r for r in rows if r["mode"] == mode]
        print()
        print(f"== {mode} (VAD {'on' if MODES[mode]['vad'] else 'off'}, caller sends {MODES[mode]['audio']}) ==")
        headers = ["N", "lag p50 ms", "p99", "p99.9", "max", "frames >20ms", "100ms slots >20ms",
                   "handler p50", "p99", "sent", "handled", "closed"]  # fmt: skip
        body = []
        for r in mrows:
            body.append([
                str(r["streaming"]),
                fmt(r["lag_p50"], ".2f"), fmt(r["lag_p99"], ".2f"), fmt(r["lag_p999"], ".2f"), fmt(r["lag_max"], ".1f"),
                str(r["over_20ms"]), str(r["stall_buckets"]),
                _us(r["handler_p50"]), _us(r["handler_p99"]),
                str(r["sent"]), str(r["handled"]),
                str(r["closed"]) + (f" {r['close_codes']}" if r["close_codes"] else ""),
            ])  # fmt: skip
        print(table(headers, body))
        print()
        headers = ["N", "CPU %", "loop thread %", "CPU ms/stream-s", "RSS MiB", "MiB/stream", "marginal MiB/stream",
                   "waited for CPU %", "machine busy %", "others %", "gen CPU %", "gen late p99", "gc0/1/2 runs", "gc max ms"]  # fmt: skip
        body = []
        for r in mrows:
            gc = r["gc"]
            body.append([
                str(r["streaming"]),
                fmt(r["cpu_pct"], ".0f"), fmt(r["loop_cpu_pct"], ".0f"), fmt(r["cpu_ms_per_stream_s"], ".2f"),
                fmt(r["rss_mib"], ".0f"), fmt(r["rss_per_stream_mib"], ".3f"), fmt(r["rss_marginal_mib"], ".3f"),
                fmt(r["runqueue_wait_pct"], ".0f"), fmt(r["machine_busy_pct"], ".0f"),
                fmt(r["machine_busy_pct"] * (os.cpu_count() or 1) - r["cpu_pct"] - r["gen_cpu_pct"], ".0f"),
                fmt(r["gen_cpu_pct"], ".0f"), fmt(r["gen_late_p99"], ".1f") + "ms",
                "/".join(str(gc[f"gen{g}"]["count"]) for g in range(3)),
                fmt(max(gc[f"gen{g}"]["max_ms"] for g in range(3)), ".1f"),
            ])  # fmt: skip
        print(table(headers, body))
        ok = [r["streaming"] for r in mrows if r["lag_p99"] is not None and r["lag_p99"] < TARGET_P99_MS and not r["closed"]]
        met = any(r["streaming"] >= 300 and r["lag_p99"] is not None and r["lag_p99"] < TARGET_P99_MS for r in mrows)
        print(f"largest N with p99 < {TARGET_P99_MS:g} ms: {max(ok) if ok else 'none'}; "
              f"target (>= 300 streams) {'MET' if met else 'NOT MET'}; "
              f"server log: {mrows[0]['log_warnings']} warnings, {mrows[0]['log_errors']} errors")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default="50,100,200,300", help="stream counts, ascending (default 50,100,200,300)")
    parser.add_argument("--modes", default="vad-off,vad-on", help=f"comma list of {', '.join(MODES)} (default vad-off,vad-on)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per step (default 15)")
    parser.add_argument("--settle", type=float, default=2.0, help="pause after opening streams (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--profile", choices=["none", "cprofile", "pyspy"], default="none",
                        help="after the last step, profile daphne for --profile-seconds (not during measurement)")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="py-spy executable")
    parser.add_argument("--server", choices=["daphne", "uvicorn", "uvicorn-uvloop"], default="daphne",
                        help="ASGI server for the app (default daphne; uvicorn variants are a what-if comparison)")
    parser.add_argument("--uvicorn", default=shutil.which("uvicorn") or "uvicorn", help="uvicorn executable for --server uvicorn*")
    parser.add_argument("--dispatch", choices=["channels", "pump"], default="channels",
                        help="pump: replace channels' await_many_dispatch in the server (what-if, bench/dispatch.py)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep daphne logs and profiles (printed path)")
    args = parser.parse_args()
    args.sweep = sorted(int(x) for x in args.sweep.split(",") if x.strip())
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}")
    if args.profile == "pyspy" and not shutil.which(args.py_spy) and not os.path.exists(args.py_spy):
        parser.error("py-spy not found (pass --py-spy PATH or use --profile cprofile)")
    raise_nofile()
    os.environ["BENCH_DISPATCH"] = "pump" if args.dispatch == "pump" else ""
    prefix = f"benchload{run_id()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-stream-load-"))
    rows: list[dict] = []
    profiles: dict[str, str] = {}
    started = time.monotonic()
    try:
        log(f"database bench_mediastream_{prefix}, Redis prefix {prefix}, logs in {workdir}")
        with bench_database(prefix) as database_url:
            for mode in modes:
                mode_rows, profile_text = run_mode(mode, args, database_url, prefix, workdir)
                rows += mode_rows
                if profile_text:
                    profiles[mode] = profile_text
    finally:
        removed = redis_cleanup(prefix)
        log(f"removed {removed} Redis keys; total {time.monotonic() - started:.0f}s")
    print_report(rows, args)
    for mode, text in profiles.items():
        print(f"\n== profile of daphne, {mode}, N={args.sweep[-1]} ==\n{text}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.keep_logs:
        print(f"\nlogs and profiles kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
