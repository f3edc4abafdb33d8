"""What the Prometheus metrics cost a stream: CPU per health tick, and that spread over the inbound frames.

    .venv/bin/python bench/metrics_cost.py                      # one process, then PROMETHEUS_MULTIPROC_DIR
    .venv/bin/python bench/metrics_cost.py --ticks 20000 --health-seconds 2

Nothing of mediastream.metrics runs per inbound frame: a stream's
``StreamMeter`` adds its counters' deltas at each ``stream.health`` tick
(``STREAM_HEALTH_SECONDS``) and at its end. This script times that tick as the
consumer runs it (the real meter on real ``StreamStats`` that grew by a tick's
frames, a mark echoed, a queue depth sampled) in process CPU time
(``time.process_time``), and divides by the frames a tick covers (50 a second).
For scale it also times one ``Counter.inc()``: what calling prometheus_client
once per frame would cost instead. Each mode runs in a child process, since
multiprocess mode is chosen when prometheus_client is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMES_PER_SECOND = 50


def measure(ticks: int, health_seconds: float) -> dict:
    """In this process: CPU per tick of a stream's meter, and per Counter.inc."""
    from mediastream.events import StreamEvent
    from mediastream.metrics import FRAMES_IN
    from mediastream.metrics.meter import StreamMeter
    from mediastream.session import Announce
    from mediastream.stats import StreamStats

    stats = StreamStats()
    sent = [0]
    meter = StreamMeter(
        stats, audio_bytes_sent=lambda: sent[0], queue_depth=lambda: 1, stt_backend="Bench", tts_backend=lambda: "Bench"
    )
    meter.start()
    frames_per_tick = round(health_seconds * FRAMES_PER_SECOND)
    cpu = 0.0
    for tick in range(ticks):
        stats.media_frames += frames_per_tick  # the stream's own counters, as the frames left them (not timed)
        stats.media_bytes += 160 * frames_per_tick
        stats.sequence_gaps += tick % 2
        sent[0] += 160 * frames_per_tick
        stats.marks += 1
        data = {"media_frames": stats.media_frames, "marks": stats.marks, "mark_rtt_ms": 80.0 + tick % 7}
        announcement = Announce(StreamEvent.STREAM_HEALTH, data)
        started = time.process_time()
        meter.observe(announcement)
        cpu += time.process_time() - started
    meter.close()
    incs = ticks * 10
    started = time.process_time()
    for _ in range(incs):
        FRAMES_IN.inc()
    inc_us = (time.process_time() - started) / incs * 1e6
    tick_us = cpu / ticks * 1e6
    return {
        "ticks": ticks,
        "frames_per_tick": frames_per_tick,
        "tick_us": round(tick_us, 2),
        "per_frame_ns": round(tick_us * 1000 / frames_per_tick, 1),
        "counter_inc_us": round(inc_us, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=20000, help="health ticks timed per mode (default 20000)")
    parser.add_argument("--health-seconds", type=float, default=5.0, help="STREAM_HEALTH_SECONDS (default 5, as shipped)")
    parser.add_argument("--child", choices=["single", "multiprocess"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import django

        django.setup()
        print(json.dumps(measure(args.ticks, args.health_seconds)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as directory:
        for mode in ("single", "multiprocess"):
            env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings"}
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            command = [sys.executable, "-m", "bench.metrics_cost", "--child", mode, "--ticks", str(args.ticks), "--health-seconds", str(args.health_seconds)]
            out = subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600).stdout
            rows.append((mode, json.loads(out.strip().splitlines()[-1])))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"metrics cost per stream (STREAM_HEALTH_SECONDS={args.health_seconds:g}, {args.ticks} ticks; load average {load})")
    print(f"{'mode':<13} {'CPU us/tick':>11} {'frames/tick':>11} {'ns/frame':>9} {'Counter.inc us':>15}")
    for mode, row in rows:
        print(f"{mode:<13} {row['tick_us']:>11.2f} {row['frames_per_tick']:>11} {row['per_frame_ns']:>9.1f} {row['counter_inc_us']:>15.3f}")


if __name__ == "__main__":
    main()
