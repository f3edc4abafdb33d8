"""Send-to-ack time and sender CPU of a command: a per-call group against the stream's own channel.

    .venv/bin/python bench/command_path.py --commands 500 --rounds 3

A child process plays the consumer holding a call: one channel of its own on
the Redis channel layer, a member of the call's group (how commands reached
streams before) and registered in ``mediastream.directory`` (how they do now).
It acknowledges every command at once on the command's ``reply_to``, as the
consumer acknowledges ``speak(wait=True)``. This process sends ``--commands``
commands one after the other each way, the two ways alternated ``--rounds``
times in one run so the machine's load falls on both alike:

* ``group``: ``group_send`` to the call's group (channels_redis: a sorted-set
  read of the members, then a send to each);
* ``direct``: ``mediastream.directory`` lookup (one GET) then ``send`` to the
  channel.

It prints the send -> acknowledgement time (p50/p99, wall clock) and this
process's CPU per command (``time.process_time``), which the load disturbs less.
The Redis keys it wrote are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, REDIS_URL, ROOT, log, redis_cleanup, run_id, table

CALL_SID = "CA" + "7" * 32
GROUP = f"mediastream.call.{CALL_SID}"


def layer(prefix: str):
    from channels_redis.core import RedisChannelLayer

    return RedisChannelLayer(hosts=[{"address": REDIS_URL, "socket_timeout": None}], prefix=prefix)


async def hold_the_call(prefix: str) -> None:
    """The child: join the group, register, acknowledge every command until stdin closes."""
    from mediastream.directory import for_layer

    here = layer(prefix)
    channel = await here.new_channel()
    await here.group_add(GROUP, channel)
    await for_layer(here).register(CALL_SID, channel, ttl=600)
    print("ready", flush=True)
    while True:
        message = await here.receive(channel)
        await here.send(message["reply_to"], {"type": "ack"})


async def send_commands(prefix: str, way: str, n: int) -> dict:
    from mediastream.directory import for_layer

    here = layer(prefix)
    directory = for_layer(here)
    reply_to = await here.new_channel()
    acks, sends = [], []
    send_cpu = 0.0
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        c0 = time.process_time()
        message = {"type": "playback.say", "reply_to": reply_to}
        if way == "group":
            await here.group_send(GROUP, message)
        else:
            await here.send(await directory.lookup(CALL_SID), message)
        send_cpu += time.process_time() - c0
        sends.append((time.perf_counter() - t0) * 1000)
        await here.receive(reply_to)
        acks.append((time.perf_counter() - t0) * 1000)
    cpu = time.process_time() - cpu0
    await here.close_pools()
    return {"acks": acks, "sends": sends, "cpu": cpu, "send_cpu": send_cpu}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=500, help="commands per way per round (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two ways (default 3)")
    args = parser.parse_args()
    prefix = f"benchcmd{run_id()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [PYTHON, "-c", f"import asyncio; from bench.command_path import hold_the_call; asyncio.run(hold_the_call({prefix!r}))"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    results: dict[str, list[dict]] = {"group": [], "direct": []}
    load_before = os.getloadavg()
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the call holder did not start")
        for round_ in range(args.rounds):
            for way in ("group", "direct") if round_ % 2 == 0 else ("direct", "group"):
                run = asyncio.run(send_commands(prefix, way, args.commands))
                results[way].append(run)
                log(f"round {round_ + 1} {way}: send->ack p50 {pct(run['acks'], 50):.2f} ms, send call p50 {pct(run['sends'], 50):.2f} ms")
    finally:
        child.kill()
        child.wait()
        removed = redis_cleanup(prefix)
        log(f"removed {removed} Redis keys")
    load_after = os.getloadavg()
    print()
    print(f"command_path: {args.commands} commands x {args.rounds} rounds each way, Redis layer, {os.cpu_count()} CPUs; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")  # fmt: skip
    body = []
    for way, runs in results.items():
        acks = [x for run in runs for x in run["acks"]]
        sends = [x for run in runs for x in run["sends"]]
        n = len(acks)
        body.append([
            way, f"{pct(acks, 50):.2f}", f"{pct(acks, 99):.2f}", " / ".join(f"{pct(run['acks'], 50):.2f}" for run in runs),
            f"{pct(sends, 50):.2f}", f"{pct(sends, 99):.2f}",
            f"{1e6 * sum(run['send_cpu'] for run in runs) / n:.0f}", f"{1e6 * sum(run['cpu'] for run in runs) / n:.0f}",
        ])  # fmt: skip
    headers = ["way", "send->ack p50 ms", "p99", "p50 per round", "send call p50 ms", "p99",
               "send CPU us/command", "CPU us/command with the ack"]  # fmt: skip
    print(table(headers, body))


if __name__ == "__main__":
    main()
