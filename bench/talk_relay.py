"""Talk relay first-audio latency: end of the user's speech -> the reply's first ``audio`` event.

    .venv/bin/python bench/talk_relay.py               # 20 questions, the embedded cascade
    .venv/bin/python bench/talk_relay.py --turns 40

A real daphne serves the project (``settings.asgi``) on a database of its own
(created, migrated and dropped here) with the embedded speech: Whisper base
(its own VAD cuts the utterance; ``MEDIASTREAM["VAD"]["END_SILENCE_SECONDS"]``,
0.5 s, is the hang time) and Piper, and the demo agent without its greeting
(the scripted agent answers at once, so the figure is the relay's, not a
model's). This process plays the browser: a staff session cookie, the relay
WebSocket, and one relay session that hears Piper-spoken questions as PCM16
24 kHz in 40 ms frames sent on an absolute real-time clock, with silence
between them, as a microphone streams.

Latency is measured here with ``perf_counter`` from sending the frame that
holds the end of the question's speech (the last 10 ms within 30 dB of the
loudest) to receiving the reply's first ``audio`` event. Stages: the user's
final transcript (hang time + transcription) and from it to the first audio
(agent + the first sentence's synthesis + send). The next question waits
until the reply has played out (its audio length), so it never barges in.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REDIS_URL, create_database, drop_database, log, migrate, redis_cleanup  # noqa: E402

QUESTIONS = [
    "What are your opening hours?",
    "When do you close tonight?",
    "Are you open on Sunday?",
    "I would like to book a table.",
    "What time do you open?",
]
AGENT = {
    "BACKEND": "mediastream.agents.scripted.ScriptedAgent",
    "OPTIONS": {"SCRIPT": "mediastream.agents.demo", "GREETING": ""},
}
OVERRIDES = {
    "AGENT": AGENT,
    "TTS": {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}},
    "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}},
}
FRAME_MS = 40
FRAME_BYTES = 24000 * 2 * FRAME_MS // 1000


def speech_end_ms(pcm: bytes) -> int:
    """Where the speech in ``pcm`` (PCM16 24 kHz) ends: the last 10 ms frame within 30 dB of the loudest."""
    import numpy as np

    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    per = 240
    n = len(x) // per
    energy = (x[: n * per].reshape(n, per) ** 2).mean(axis=1)
    loud = np.nonzero(energy >= energy.max() * 10 ** (-30 / 10))[0]
    return int(loud[-1] + 1) * 10


class Microphone:
    """Frames on an absolute 40 ms clock: the current question's, else silence."""

    def __init__(self, client, session: str) -> None:
        self.client = client
        self.session = session
        self.queue: list[bytes] = []
        self.sent_at: dict[int, float] = {}  # frame index in the current question -> perf_counter
        self._index = 0

    def say(self, pcm: bytes) -> None:
        self.queue = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        self.sent_at = {}
        self._index = 0

    async def run(self) -> None:
        silence = bytes(FRAME_BYTES)
        start = time.perf_counter()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * FRAME_MS / 1000 - time.perf_counter()))
            frame = silence
            if self.queue:
                frame = self.queue.pop(0)
                self.sent_at[self._index] = time.perf_counter()
                self._index += 1
            payload = {"relaySessionId": self.session, "audioBase64": base64.b64encode(frame).decode()}
            asyncio.ensure_future(self.client.call("audio", payload))


async def measure(port: int, cookie: str, turns: int) -> list[tuple[float, float, float]]:
    from tests.live import Live
    from tests.talk_client import RelayClient, speech_pcm

    client = await RelayClient.open(Live(port=port, redis_url=REDIS_URL, prefix=""), cookie)
    created = await client.create()
    session = created["relaySessionId"]
    await client.wait_event(lambda e: e["type"] == "ready", timeout=120)
    clips = []
    for text in QUESTIONS:
        pcm, _ = speech_pcm(text, lead_ms=200, tail_ms=0)
        clips.append((text, pcm, speech_end_ms(pcm)))
    mic = Microphone(client, session)
    streaming = asyncio.create_task(mic.run())
    results: list[tuple[float, float, float]] = []
    try:
        for turn in range(turns):
            text, pcm, end_ms = clips[turn % len(clips)]
            since = len(client.events)
            mic.say(pcm)
            final = await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "user" and e["final"], after=since, timeout=60)
            final_at = time.perf_counter()
            first = await client.wait_event(lambda e: e["type"] == "audio", after=since, timeout=60)
            first_at = time.perf_counter()
            end_at = mic.sent_at[(end_ms - 1) // FRAME_MS]
            await client.wait_event(lambda e: e["type"] == "mark", after=since, timeout=60)
            played = sum(len(base64.b64decode(e["audioBase64"])) for e in client.events[since:] if e["type"] == "audio") / 48000
            results.append(((first_at - end_at) * 1000, (final_at - end_at) * 1000, (first_at - final_at) * 1000))
            log(f"turn {turn + 1}: {results[-1][0]:.0f} ms ({text!r} heard as {final['text']!r}; first audio {first['type']})")
            await asyncio.sleep(max(0.0, first_at + played + 0.3 - time.perf_counter()))  # the reply plays out
    finally:
        streaming.cancel()
        await client.close()
    return results


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args(argv)
    run = f"{os.getpid()}x{secrets.token_hex(3)}"
    prefix, db_name = f"bench-talk-{run}-", f"bench_talk_{run}"
    logdir = Path(tempfile.mkdtemp(prefix="bench-talk-"))
    load_before = os.getloadavg()[0]
    results = []
    try:
        database_url = create_database(db_name)
        migrate(database_url, prefix)
        os.environ.update(DJANGO_SETTINGS_MODULE="tests.settings_live", DATABASE_URL=database_url, REDIS_URL=REDIS_URL, CHANNEL_LAYER_PREFIX=prefix)
        import django

        django.setup()
        from tests.live import daphne_server
        from tests.talk_client import RELAY_MESSAGE_BYTES, session_cookie

        cookie = session_cookie(f"bench-{run}")
        server = daphne_server(
            database_url=database_url, redis_url=REDIS_URL, prefix=prefix, overrides=OVERRIDES,
            log_path=logdir / "daphne.log", max_message_size=RELAY_MESSAGE_BYTES,
        )  # fmt: skip
        with server as (port, _proc):
            log(f"daphne on port {port}; {args.turns} questions")
            results = asyncio.run(measure(port, cookie, args.turns))
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(db_name)
        redis_cleanup(prefix)
        for path in logdir.iterdir():
            path.unlink()
        logdir.rmdir()
    total, stt, after = (sorted(r[i] for r in results) for i in range(3))
    print()
    print(f"Talk relay, embedded cascade (Whisper base + demo agent + Piper): {len(results)} questions")
    print(f"{'':28}{'p50':>8}{'p90':>8}{'max':>8}  ms")
    for label, values in (
        ("speech end -> first audio", total),
        ("  speech end -> final", stt),
        ("  final -> first audio", after),
    ):
        print(f"{label:28}{percentile(values, 50):8.0f}{percentile(values, 90):8.0f}{max(values):8.0f}")
    print(f"mean {statistics.mean(total):.0f} ms; {os.cpu_count()} CPUs; load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
