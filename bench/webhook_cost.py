"""What one signed voice webhook costs daphne's event loop (its main thread) and the whole process.

    .venv/bin/python bench/webhook_cost.py --calls 400 --concurrency 4

One daphne (``bench.asgi``, the demo middleware, psycopg's pool) on a database
of its own; this process posts ``--calls`` signed voice webhooks for new calls,
``--concurrency`` at a time over one HTTP client, after ``--warmup`` unmeasured
ones. The figures are CPU time per webhook from ``/proc``: the main thread
(daphne's event loop, which also carries every media stream of the process)
and all threads (the request's own thread runs the middleware, the view and
the database calls), plus the round trip seen by the client. No media stream
is opened: the webhook alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    AUTH_TOKEN,
    PUBLIC_BASE_URL,
    Daphne,
    bench_database,
    bench_overrides,
    cpu_seconds,
    log,
    redis_cleanup,
    run_id,
)


def main_thread_ns(pid: int) -> int:
    """Nanoseconds the main thread ran (schedstat: finer than utime + stime)."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def post_webhooks(server_url: str, count: int, concurrency: int) -> list[float]:
    import httpx

    from mediastream.simulator import TwilioCall, sign

    times: list[float] = []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker(share: int) -> None:
            for _ in range(share):
                call = TwilioCall(server_url=server_url, public_url=PUBLIC_BASE_URL, auth_token=AUTH_TOKEN)
                params = call.base_params("ringing")
                signature = sign(AUTH_TOKEN, PUBLIC_BASE_URL.rstrip("/") + "/twilio/voice/", params)
                started = time.perf_counter()
                response = await client.post(
                    server_url + "/twilio/voice/", data=params, headers={"X-Twilio-Signature": signature}
                )
                times.append(time.perf_counter() - started)
                response.raise_for_status()

        shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(worker(share) for share in shares))
    return times


def measure(daphne: Daphne, args) -> dict:
    url = f"http://127.0.0.1:{daphne.port}"
    asyncio.run(post_webhooks(url, args.warmup, args.concurrency))
    profiler = None
    if args.py_spy:
        import subprocess

        profiler = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(daphne.pid), "--rate", "500", "--threads", "--format", "raw",
             "--output", args.py_spy_out, "--nonblocking", "--duration", "600", "--gil"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)
    main0, all0, wall0 = main_thread_ns(daphne.pid), cpu_seconds(daphne.pid), time.monotonic()
    times = asyncio.run(post_webhooks(url, args.calls, args.concurrency))
    if profiler is not None:
        import signal

        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)
    main, every, wall = main_thread_ns(daphne.pid) - main0, cpu_seconds(daphne.pid) - all0, time.monotonic() - wall0
    times.sort()
    return {
        "calls": args.calls,
        "main_thread_us_per_webhook": main / 1000 / args.calls,
        "process_us_per_webhook": every * 1e6 / args.calls,
        "webhooks_per_s": args.calls / wall,
        "round_trip_p50_ms": 1000 * statistics.median(times),
        "round_trip_p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment (repeatable)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--py-spy", help="py-spy executable: record daphne during the measured webhooks")
    parser.add_argument("--py-spy-out", default="/tmp/webhook_cost.pyspy.txt", help="where py-spy writes (raw stacks)")
    args = parser.parse_args()
    for pair in args.env:
        key, _, value = pair.partition("=")
        os.environ[key] = value
    prefix = f"benchhook{run_id()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    try:
        with bench_database(prefix) as database_url:
            daphne = Daphne(database_url=database_url, prefix=prefix, overrides=bench_overrides(), log_path=workdir / "daphne.log")
            try:
                row = measure(daphne, args)
            finally:
                daphne.stop()
    finally:
        redis_cleanup(prefix)
        shutil.rmtree(workdir, ignore_errors=True)
    row["load_average"] = os.getloadavg()[0]
    log(
        f"{args.calls} voice webhooks, {args.concurrency} at a time: daphne main thread "
        f"{row['main_thread_us_per_webhook']:.0f} us/webhook, whole process {row['process_us_per_webhook']:.0f} us/webhook, "
        f"{row['webhooks_per_s']:.0f}/s, round trip p50 {row['round_trip_p50_ms']:.1f} / p99 {row['round_trip_p99_ms']:.1f} ms, "
        f"load {row['load_average']:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
