"""What speech out costs daphne per stream, by ``PLAYBACK_CHUNK_MS`` (audio per outbound media message).

    .venv/bin/python bench/playback_cost.py --streams 100 --chunks 20,100,200 --rounds 2

For each chunk size (interleaved over ``--rounds``), one daphne (``bench.asgi``,
TTS ``SilenceBackend``, a long ``STREAM_GREETING``) and ``--streams`` calls
through the signed webhook and upgrade, opened at ``--rate``/s; the callers send
no audio, so what daphne does is play the greeting (and answer the marks the
client echoes when the audio has played, as Twilio does). Once every stream is
playing, daphne's CPU time over ``--seconds`` is the figure: percent of one
core, and microseconds per second of audio played. The client also counts the
media messages and checks the audio has no gap (each message arriving before
the one before it finished playing, after the first).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
    AUTH_TOKEN,
    PUBLIC_BASE_URL,
    Daphne,
    bench_database,
    bench_overrides,
    cpu_seconds,
    log,
    raise_nofile,
    redis_cleanup,
    run_id,
    table,
)

#: About 40 s of SilenceBackend audio (60 ms per character), in pieces of at most TTS_MAX_CHARS.
GREETING = "Thanks for calling, this is a long greeting that keeps playing while the bench measures. " * 8


class Tally:
    """Media messages, seconds of audio and gaps seen by the client over all streams."""

    def __init__(self) -> None:
        self.messages = 0
        self.audio_bytes = 0
        self.gaps = 0
        self.first: dict[str, asyncio.Future] = {}


async def open_streams(server_url: str, count: int, rate: float, tally: Tally) -> list:
    from mediastream.simulator import TwilioCall, TwilioStream, stream_urls

    loop = asyncio.get_running_loop()
    streams: list = []

    async def one(index: int) -> None:
        call = TwilioCall(server_url=server_url, public_url=PUBLIC_BASE_URL, auth_token=AUTH_TOKEN)
        instructions = await call.answer()
        connect_url, signed_url = stream_urls(PUBLIC_BASE_URL, server_url, instructions.url)
        stream = TwilioStream(
            connect_url, signed_url=signed_url, auth_token=AUTH_TOKEN, call_sid=call.call_sid,
            parameters=instructions.parameters,
        )  # fmt: skip
        first = loop.create_future()
        playout = [0.0]

        def on_message(message: dict, now: float) -> None:
            if message.get("event") != "media":
                return
            audio = len(base64.b64decode(message["media"]["payload"]))
            tally.messages += 1
            tally.audio_bytes += audio
            if first.done() and now > playout[0] + 0.005:
                tally.gaps += 1
            playout[0] = max(now, playout[0]) + audio / 8000
            if not first.done():
                first.set_result(now)

        stream.on_message = on_message
        await stream.connect()
        await stream.start()
        await asyncio.wait_for(first, 15)
        streams.append(stream)

    started = time.perf_counter()
    tasks = []
    for index in range(count):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return streams


async def measure(server_url: str, pid: int, args) -> dict:
    tally = Tally()
    streams = await open_streams(server_url, args.streams, args.rate, tally)
    await asyncio.sleep(1.0)
    messages0, audio0, gaps0 = tally.messages, tally.audio_bytes, tally.gaps
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(args.seconds)
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    audio_s = (tally.audio_bytes - audio0) / 8000
    row = {
        "cpu_pct": 100 * cpu / wall,
        "us_per_audio_s": 1e6 * cpu / max(audio_s, 1e-9),
        "messages_per_s": (tally.messages - messages0) / wall,
        "audio_s_per_s": audio_s / wall,
        "gaps": tally.gaps - gaps0,
        "load": os.getloadavg()[0],
    }
    await asyncio.gather(*(stream.close() for stream in streams), return_exceptions=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="streams opened per second (default 20)")
    parser.add_argument("--chunks", default="20,100,200", help="PLAYBACK_CHUNK_MS values (default 20,100,200)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (default 10)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    raise_nofile()
    chunks = [int(value) for value in args.chunks.split(",")]
    rows: list[dict] = []
    prefix = f"benchplay{run_id()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-playback-"))
    try:
        with bench_database(prefix) as database_url:
            for round_ in range(args.rounds):
                for chunk in chunks:
                    overrides = bench_overrides(
                        TTS={"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {}},
                        STREAM_GREETING=GREETING,
                        PLAYBACK_CHUNK_MS=chunk,
                        VAD={"ENABLED": False},
                    )
                    daphne = Daphne(
                        database_url=database_url, prefix=prefix, overrides=overrides,
                        log_path=workdir / f"daphne-{chunk}-{round_}.log",
                    )  # fmt: skip
                    try:
                        row = asyncio.run(measure(f"http://127.0.0.1:{daphne.port}", daphne.pid, args))
                    finally:
                        daphne.stop()
                    row.update(chunk_ms=chunk, round=round_ + 1)
                    rows.append(row)
                    log(f"chunk {chunk} ms, round {round_ + 1}: {row['cpu_pct']:.1f} % of a core")
    finally:
        redis_cleanup(prefix)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.streams} streams playing a greeting (SilenceBackend, VAD off, no caller audio), {args.seconds:g} s windows\n")
    print(
        table(
            ["chunk ms", "round", "daphne CPU % of a core", "us CPU per s of audio", "media messages/s", "audio s/s", "gaps", "load"],
            [
                [str(r["chunk_ms"]), str(r["round"]), f"{r['cpu_pct']:.1f}", f"{r['us_per_audio_s']:.0f}",
                 f"{r['messages_per_s']:.0f}", f"{r['audio_s_per_s']:.1f}", str(r["gaps"]), f"{r['load']:.2f}"]
                for r in rows
            ],
        )  # fmt: skip
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
