"""What the global connection limit costs a handshake: Redis round trips, latency and CPU.

One process (this one) stands for a daphne process: ``GlobalCaps`` on the
local Redis, under a key of its own (deleted at the end). Two figures:

* sequential: one handshake at a time (acquire, then release), as a quiet
  server sees them: latency of the acquire, and this process's CPU per
  handshake (acquire + release);
* bursts: N handshakes at once (a ramp, a flood that passes the local caps):
  how many Lua calls and how long until all are answered.

    .venv/bin/python bench/global_caps.py [--handshakes 2000] [--burst 200] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediastream.globalcaps import GlobalCaps, GlobalLimits  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def run(args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis

    key = f"bench:caps:{uuid.uuid4().hex}"
    limits = GlobalLimits(redis_url=args.redis, key=key, max_connections=args.burst * 10)
    caps = GlobalCaps(limits, "bench/ns:1")
    writes = 0
    original = caps._write

    async def counted(asked: int, limit: int):
        nonlocal writes
        writes += 1
        return await original(asked, limit)

    caps._write = counted
    try:
        await caps.acquire("warm-up")
        caps.release("warm-up")
        await caps.total()
        latencies = []
        cpu_start = time.process_time()
        for n in range(args.handshakes):
            started = time.perf_counter()
            assert await caps.acquire(f"s{n}")
            latencies.append((time.perf_counter() - started) * 1000)
            caps.release(f"s{n}")
            await asyncio.sleep(0)  # the end's write goes out before the next handshake, as between real ones
        await caps.total()
        cpu = (time.process_time() - cpu_start) / args.handshakes * 1e6
        print(f"sequential, {args.handshakes} handshakes: acquire p50 {statistics.median(latencies):.2f} ms, "
              f"p99 {pct(latencies, 99):.2f} ms; CPU {cpu:.0f} us per handshake (acquire + release)")
        for burst in (args.burst // 10, args.burst):
            writes = 0
            started = time.perf_counter()
            results = await asyncio.gather(*(caps.acquire(f"b{burst}-{n}") for n in range(burst)))
            took = (time.perf_counter() - started) * 1000
            assert all(results)
            print(f"burst of {burst} handshakes at once: {writes} Lua calls, all answered in {took:.1f} ms")
            for n in range(burst):
                caps.release(f"b{burst}-{n}")
            await caps.total()
    finally:
        caps._writer.cancel()
        client = aioredis.Redis.from_url(args.redis)
        await client.delete(key)
        await client.aclose()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--handshakes", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
