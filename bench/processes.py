"""Calls per process and CPU per call with 1, 2 and 4 daphne processes of one deployment.

    .venv/bin/python bench/processes.py --processes 1,2,4 --calls 50

For each process count P, P daphne processes serve ``bench.asgi:application``
(the real consumer, timed: ``bench/consumer.py``), each on its own loopback
port, all on one PostgreSQL database and one Redis channel-layer prefix, as a
deployment's processes are. Load-generator children (``bench/loadgen.py``)
make ``--calls`` calls per process the way Twilio does (signed voice webhook,
signed upgrade, ``start``), round-robin over the P ports, and send real-time
silence (50 frames/s of mu-law) on every stream. After ``--settle`` seconds one
window of ``--seconds`` is measured:

* calls per process (from each server's own count of streaming sockets);
* each process's CPU from ``/proc/<pid>/stat`` (all threads), as % of a core
  and as ms per call-second (CPU ms / (calls x seconds)); the mean over the
  processes is what should stay flat as P grows;
* frame lag p99 per process (client send -> consumer), the load average and
  how busy the machine was.

On a 2-core machine 4 processes (plus the generators) oversubscribe the CPUs:
lag then grows with the run queue, CPU per call stays meaningful. Everything
it starts (daphne, generators, database, Redis keys) is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    Daphne,
    bench_database,
    bench_overrides,
    cpu_seconds,
    fmt,
    log,
    machine_cpu,
    raise_nofile,
    redis_cleanup,
    run_id,
    table,
)
from bench.stream_load import Worker


def _streaming(servers: list[Daphne]) -> list[int]:
    return [server.get("/bench/stats", timeout=60)["streaming"] for server in servers]


def run_count(processes: int, args, database_url: str, prefix: str, workdir: Path) -> dict:
    """One deployment of ``processes`` daphne processes under ``args.calls`` calls each; its measured window."""
    overrides = bench_overrides(
        VAD={"ENABLED": args.vad},
        TTS={"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {}},
    )
    log(f"{processes} process(es): starting daphne")
    servers: list[Daphne] = []
    workers: list[Worker] = []
    try:
        for i in range(processes):
            servers.append(Daphne(database_url=database_url, prefix=prefix, overrides=overrides,
                                  log_path=workdir / f"p{processes}-{i}.log"))  # fmt: skip
        urls = ",".join(server.http for server in servers)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "bench.settings"}
        # Warm-up: one short call per process loads what a stream loads lazily (DB pool, backends, VAD).
        warm = Worker(urls, 0, 1, "silence", env)
        try:
            warm.ask({"cmd": "open", "n": processes, "first_index": 0}, 120)
            time.sleep(1.0)
            warm.ask({"cmd": "stop"}, 120)
        finally:
            warm.kill()
        for server in servers:
            server.drain()
        total = processes * args.calls
        workers = [Worker(urls, i, args.workers, "silence", env) for i in range(args.workers)]
        shares = [total // len(workers) + (1 if i < total % len(workers) else 0) for i in range(len(workers))]
        first = 0
        for worker, share in zip(workers, shares):
            # Consecutive indexes per worker: the round-robin spreads each worker's calls over every port.
            worker.send({"cmd": "open", "n": share, "first_index": first})
            first += share
        opened = [worker._read(900) for worker in workers]
        failed = sum(o["failed"] for o in opened)
        for _ in range(args.retries):  # a busy machine times out some handshakes: open those again
            if not failed:
                break
            log(f"  {failed} calls failed to open ({[e for o in opened for e in o['errors']][:2]}); opening them again")
            again = [o["failed"] for o in opened]
            for worker, n in zip(workers, again):
                worker.send({"cmd": "open", "n": n, "first_index": first})
                first += n
            opened = [worker._read(900) for worker in workers]
            failed = sum(o["failed"] for o in opened)
        if failed:
            log(f"  {failed} calls could not be opened")
        deadline = time.monotonic() + 120
        while sum(_streaming(servers)) < total - failed and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(args.settle)

        load_before = os.getloadavg()
        cpu0 = [cpu_seconds(server.pid) for server in servers]
        busy0, all0 = machine_cpu()
        for server in servers:
            server.get("/bench/reset", timeout=60)
        for worker in workers:
            worker.send({"cmd": "reset"})
        for worker in workers:
            worker._read(120)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        stats = [server.get("/bench/stats", timeout=60) for server in servers]
        wall = time.monotonic() - t0
        cpu1 = [cpu_seconds(server.pid) for server in servers]
        busy1, all1 = machine_cpu()
        load_after = os.getloadavg()
        gen = [worker.ask({"cmd": "stats"}, 120) for worker in workers]

        per_process = []
        for server, stat, c0, c1 in zip(servers, stats, cpu0, cpu1):
            calls = stat["streaming"]
            per_process.append({
                "calls": calls,
                "cpu_pct": 100 * (c1 - c0) / wall,
                "cpu_ms_per_call_s": 1000 * (c1 - c0) / (calls * wall) if calls else None,
                "lag_p99": stat["lag_ms"]["p99"],
                "frames": stat["lag_ms"]["count"],
            })  # fmt: skip
        calls = sum(p["calls"] for p in per_process)
        cpu_total = sum(c1 - c0 for c0, c1 in zip(cpu0, cpu1))
        row = {
            "processes": processes,
            "calls": calls,
            "per_process": per_process,
            "cpu_ms_per_call_s": 1000 * cpu_total / (calls * wall) if calls else None,
            "frames_expected": int(round(calls * 50 * wall)),
            "frames_handled": sum(p["frames"] for p in per_process),
            "cpu_us_per_frame": 1e6 * cpu_total / max(1, sum(p["frames"] for p in per_process)),
            "machine_busy_pct": 100 * (busy1 - busy0) / max(1, all1 - all0),
            "gen_cpu_pct": 100 * sum(g["cpu_s"] for g in gen) / wall,
            "closed": sum(g["closed"] for g in gen),
            "failed": failed,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        }
        log(f"  {processes} process(es), {calls} calls: {fmt(row['cpu_ms_per_call_s'], '.2f')} CPU ms per call-second, "
            f"load average {load_after[0]:.2f}")  # fmt: skip

        log(f"{processes} process(es): stopping {calls} calls")
        for worker in workers:
            worker.send({"cmd": "stop"})
        for worker in workers:
            try:
                worker._read(180)
            except Exception as exc:
                log(f"  generator {worker.pid} did not stop cleanly: {exc}")
        for server in servers:
            server.drain()
        return row
    finally:
        for worker in workers:
            worker.kill()
        for server in servers:
            server.stop()


def print_report(rows: list[dict], args) -> None:
    print()
    print(f"processes: {args.calls} calls per process, real-time silence, VAD {'on' if args.vad else 'off'}, "
          f"{args.seconds:g}s window, {args.workers} load-generator process(es), {os.cpu_count()} CPUs")  # fmt: skip
    headers = ["processes", "calls", "calls per process", "CPU % per process", "CPU ms/call-s per process",
               "CPU ms/call-s (all)", "frames handled/expected", "CPU us/frame", "lag p99 ms per process", "machine busy %", "gen CPU %", "load avg 1/5 min", "closed"]  # fmt: skip
    body = []
    for r in rows:
        per = r["per_process"]
        body.append([
            str(r["processes"]), str(r["calls"]),
            "/".join(str(p["calls"]) for p in per),
            "/".join(fmt(p["cpu_pct"], ".0f") for p in per),
            "/".join(fmt(p["cpu_ms_per_call_s"], ".2f") for p in per),
            fmt(r["cpu_ms_per_call_s"], ".2f"),
            f"{r['frames_handled']}/{r['frames_expected']}", fmt(r["cpu_us_per_frame"], ".0f"),
            "/".join(fmt(p["lag_p99"], ".1f") for p in per),
            fmt(r["machine_busy_pct"], ".0f"), fmt(r["gen_cpu_pct"], ".0f"),
            f"{r['loadavg_after'][0]:.2f}/{r['loadavg_after'][1]:.2f}",
            str(r["closed"] + r["failed"]),
        ])  # fmt: skip
    print(table(headers, body))
    costs = [r["cpu_ms_per_call_s"] for r in rows if r["cpu_ms_per_call_s"]]
    if len(costs) > 1:
        print(f"CPU per call-second from {min(costs):.2f} to {max(costs):.2f} ms "
              f"(max/min {max(costs) / min(costs):.2f}) over {', '.join(str(r['processes']) for r in rows)} processes")  # fmt: skip
    if any(r["frames_handled"] < 0.9 * r["frames_expected"] or r["closed"] for r in rows):
        print("a run handled under 90 % of the frames due, or lost calls: the machine was too busy for it to mean much")
    if any(r["processes"] > (os.cpu_count() or 1) for r in rows):
        print(f"more processes than the {os.cpu_count()} CPUs: lag reflects the run queue there; CPU per call stays comparable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,4", help="daphne process counts (default 1,2,4)")
    parser.add_argument("--calls", type=int, default=50, help="calls per process (default 50)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (default 20)")
    parser.add_argument("--settle", type=float, default=3.0, help="pause after the calls are up (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--retries", type=int, default=3, help="times calls that failed to open are opened again (default 3)")
    parser.add_argument("--vad", action="store_true", help="VAD on (default off: the cost of the stream path alone)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the daphne logs (printed path)")
    args = parser.parse_args()
    counts = [int(x) for x in args.processes.split(",") if x.strip()]
    raise_nofile()
    prefix = f"benchproc{run_id()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    rows: list[dict] = []
    started = time.monotonic()
    try:
        log(f"database bench_mediastream_{prefix}, Redis prefix {prefix}, logs in {workdir}")
        with bench_database(prefix) as database_url:
            for processes in counts:
                rows.append(run_count(processes, args, database_url, prefix, workdir))
    finally:
        removed = redis_cleanup(prefix)
        log(f"removed {removed} Redis keys; total {time.monotonic() - started:.0f}s")
    print_report(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.keep_logs:
        print(f"\nlogs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
