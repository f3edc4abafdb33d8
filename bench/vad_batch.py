"""VAD cost per 32 ms window: each stream's window scored alone vs batched across a process's streams.

    .venv/bin/python bench/vad_batch.py                     # 1, 10, 50, 150 streams
    .venv/bin/python bench/vad_batch.py --streams 1,100 --seconds 8

N streams of real speech (``tests.speech_set`` human recordings through the
phone path, each starting a few frames after the one before, looped) are fed
as 20 ms frames round after round on one asyncio loop, a loop turn after each
round as a consumer's loop would take: the real ``SpeechDetector`` with
``batch=False`` (one model call per window) and ``batch=True`` (the loop's
``VadBatch``). Unpaced: the figure is CPU time of the feeding thread
(``time.thread_time``) divided by the windows the model ran on, so the rest of
the machine's load changes it little. Both modes make the same decisions
(``tests/test_vad.py``); the script checks that their speech starts match.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # first: bench/settings.py must not shadow the project's settings package
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from mediastream.vad import SpeechDetector, VadBatch, preload  # noqa: E402
from tests import audio_fixtures as af  # noqa: E402
from tests.speech_set import human_clips  # noqa: E402


def streams_of(count: int, seconds: float) -> list[list[bytes]]:
    clips = [clip.mulaw for clip in human_clips()]
    frames_needed = int(seconds * 50)
    out = []
    for i in range(count):
        audio = af.silence(20 * (i % 25))
        while len(audio) < frames_needed * 160:
            audio += clips[(i + len(audio)) % len(clips)]
        out.append(af.frames(audio[: frames_needed * 160]))
    return out


async def run(streams: list[list[bytes]], batch: bool) -> dict:
    events: list[list] = [[] for _ in streams]
    detectors = [SpeechDetector(on_event=events[i].append, batch=batch) for i in range(len(streams))]
    vad_batch = VadBatch.for_running_loop()
    calls0, batched0 = vad_batch.calls, vad_batch.windows
    started = time.thread_time()
    for k in range(len(streams[0])):
        for i, detector in enumerate(detectors):
            events[i].extend(detector.feed(streams[i][k]))
        await asyncio.sleep(0)
    cpu = time.thread_time() - started
    model_windows = sum(d.model_windows for d in detectors)
    windows = sum(d.windows for d in detectors)
    calls = vad_batch.calls - calls0 if batch else model_windows
    return {
        "cpu_s": cpu,
        "windows": windows,
        "model_windows": model_windows,
        "calls": calls,
        "starts": [sum(type(e).__name__ == "SpeechStarted" for e in ev) for ev in events],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,10,50,150")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    args = parser.parse_args()
    preload()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    rows = []
    for count in (int(x) for x in args.streams.split(",")):
        streams = streams_of(count, args.seconds)
        await run(streams_of(min(count, 4), 1.0), True)  # warm both paths
        await run(streams_of(min(count, 4), 1.0), False)
        alone = await run(streams, False)
        batched = await run(streams, True)
        assert alone["starts"] == batched["starts"], "batched and alone disagree"
        rows.append((count, alone, batched))
        print(f"  {count} streams done", file=sys.stderr)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("streams | model windows | alone us CPU/window | batched us CPU/window | mean batch | speed-up")
    for count, alone, batched in rows:
        a = alone["cpu_s"] / alone["model_windows"] * 1e6
        b = batched["cpu_s"] / batched["model_windows"] * 1e6
        mean = batched["model_windows"] / max(1, batched["calls"])
        print(f"{count:7d} | {alone['model_windows']:13d} | {a:18.1f} | {b:21.1f} | {mean:10.1f} | {a / b:7.2f}x")
    print("(CPU of the feeding thread per window the model ran on: decoding, gate, state machine and model)")


if __name__ == "__main__":
    asyncio.run(main())
