"""Fencing: when the caller speaks again before the agent answers, the stale reply is never played.

    .venv/bin/python bench/fencing.py                      # 100 rounds over 4 concurrent calls
    .venv/bin/python bench/fencing.py --rounds 300 --calls 8

Everything runs in this process: the production consumer (``settings.asgi``
through channels' ``WebsocketCommunicator``), PostgreSQL (a database of the
run's own, created, migrated and dropped), the in-memory channel layer, the
locmem transcription backend (this script says what the caller said, and
when), ``ChatCompletionsAgent`` against ``FakeChatCompletions``
(tests/vendors_agent) whose first token comes 300-800 ms after each request,
and :class:`TaggedBackend`, a TTS whose audio says which reply it is: every
frame of the reply to "turn N" carries N in its first two bytes, so each
frame on the socket is attributed to its turn.

One round, on one call: the caller says "turn N" (a final transcript; the
turn starts), then, before any of the reply could play, speaks again (speech
started, then the final "turn N+1"): either while the model is thinking
(before its first token) or while the reply's first sentence is being
synthesized (after ``agent.first_token``; the TTS takes ``--tts-ms`` before
its first audio). One round in three the caller interrupts twice. The last
turn of the round is answered and played to the end (``agent.reply.finished``).

A frame is stale when it belongs to a turn whose reply was cancelled and the
server never announced that turn's ``agent.first_audio`` (which it does only
while the turn is current). A cancelled turn that did announce first audio
began playing before the caller spoke again (the script's timing lost a race
with a loaded machine); such turns are counted apart, never as fenced.

:func:`run_fencing` is also what ``tests/test_fencing.py`` runs, with a few rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import json
import os
import random
import re
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mediastream.tts.base import AudioChunk, BaseTTSBackend  # noqa: E402  (no Django settings needed)

__all__ = ["FencingResult", "TaggedBackend", "decode_tag", "run_fencing"]

FRAME_BYTES = 160
#: Mu-law codes a tag byte may take: 0x00-0x7E (0x7F and 0xFF are silence).
_TAG_BASE = 127
_LAST_NUMBER = re.compile(r"(\d+)\D*$")

#: The model's first token comes this long after its request (seconds), drawn per request.
DELAY_RANGE = (0.3, 0.8)


# --- speech out that says which turn it is ---------------------------------------------------------


def encode_tag(number: int) -> bytes:
    if not 0 <= number < _TAG_BASE * _TAG_BASE:
        raise ValueError(f"tag {number} out of range")
    return bytes((number // _TAG_BASE, number % _TAG_BASE))


def decode_tag(frame: bytes) -> int | None:
    """The turn number a frame of :class:`TaggedBackend` audio carries; None for silence or other audio."""
    if len(frame) < 2 or frame[0] >= _TAG_BASE or frame[1] >= _TAG_BASE:
        return None
    return frame[0] * _TAG_BASE + frame[1]


class TaggedBackend(BaseTTSBackend):
    """8 kHz mu-law whose byte pairs repeat the last number in the text; first audio after ``FIRST_CHUNK_MS``.

    ``MS_PER_CHAR``/``MIN_MS`` set the length (whole 20 ms frames, so every
    frame starts on a pair). Text without a number is not this bench's: its
    audio is tag 0.
    """

    def __init__(self, *, FIRST_CHUNK_MS: float = 150.0, MS_PER_CHAR: float = 4.0, MIN_MS: float = 120.0) -> None:
        super().__init__()
        self.first_chunk = FIRST_CHUNK_MS / 1000
        self.ms_per_char = MS_PER_CHAR
        self.min_ms = MIN_MS

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        found = _LAST_NUMBER.search(text)
        tag = encode_tag(int(found.group(1)) if found else 0)
        frames = max(1, round(max(self.min_ms, self.ms_per_char * len(text.strip())) / 20))
        if self.first_chunk:
            await asyncio.sleep(self.first_chunk)
        yield AudioChunk(tag * (frames * FRAME_BYTES // 2), "mulaw", 8000)


# --- a slow model --------------------------------------------------------------------------------------

_request_delay: contextvars.ContextVar[float] = contextvars.ContextVar("fencing_delay", default=0.0)


def slow_chat_server(delays: dict[str, float]):
    """A FakeChatCompletions whose first token comes ``delays[<the caller's last words>]`` s after each request."""
    from tests.vendors_agent import FakeChatCompletions

    class SlowChatCompletions(FakeChatCompletions):
        # The base class reads first_token_delay inside each request's own task: a
        # context variable gives every request its own value.
        first_token_delay = property(lambda self: _request_delay.get(), lambda self, value: None)

        async def _stream(self, request, body, reply):
            last = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
            _request_delay.set(delays.get(last.get("content") or "", DELAY_RANGE[0]))
            return await super()._stream(request, body, reply)

    return SlowChatCompletions()


# --- the caller's side of one call -----------------------------------------------------------------------


@dataclass
class CallTally:
    """What one call's socket and events group saw."""

    frames_by_tag: Counter = field(default_factory=Counter)
    untagged_frames: int = 0
    clears: int = 0
    events: list[dict] = field(default_factory=list)


class EventLog:
    """A call's events-group messages in arrival order, with waits for one of a kind."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self._changed = asyncio.Event()

    def add(self, message: dict) -> None:
        self.items.append(message)
        self._changed.set()

    def find(self, kind: str, since: int = 0, **data) -> dict | None:
        for message in self.items[since:]:
            if message.get("event") == kind and all(message["data"].get(k) == v for k, v in data.items()):
                return message
        return None

    async def wait(self, kind: str, since: int = 0, timeout: float = 15.0, **data) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                found = self.find(kind, since, **data)
                if found is not None:
                    return found
                self._changed.clear()
                await self._changed.wait()


class FencedCall:
    """One in-process call: the socket read as Twilio would (marks echoed at once), its events group, its STT session."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.tally = CallTally()
        self.events = EventLog()
        self.stt = None  # the stream's LocmemSession, once connected
        self._tasks: list[asyncio.Task] = []

    async def run(self, body) -> None:
        from channels.layers import get_channel_layer

        from mediastream.backends import backends
        from mediastream.groups import events_group
        from tests.streams import live_stream

        layer = get_channel_layer()
        async with live_stream(client=f"203.0.113.{10 + self.index}") as (comm, call, stream_sid):
            channel = await layer.new_channel("fencing.")
            await layer.group_add(events_group(call.call_sid), channel)
            self._tasks = [
                asyncio.create_task(self._read(comm, stream_sid)),
                asyncio.create_task(self._listen(layer, channel)),
            ]
            try:
                self.stt = await _session_of(backends.transcription, stream_sid)
                await body(self)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await layer.group_discard(events_group(call.call_sid), channel)
        self.tally.events = self.events.items

    async def _read(self, comm, stream_sid: str) -> None:
        from tests.streams import mark

        while True:
            output = await comm.receive_output(60)
            if output["type"] != "websocket.send":
                return
            message = json.loads(output["text"])
            kind = message["event"]
            if kind == "media":
                tag = decode_tag(base64.b64decode(message["media"]["payload"]))
                if tag is None:
                    self.tally.untagged_frames += 1
                else:
                    self.tally.frames_by_tag[tag] += 1
            elif kind == "clear":
                self.tally.clears += 1
            elif kind == "mark":
                await comm.send_to(text_data=mark(stream_sid, message["mark"]["name"]))

    async def _listen(self, layer, channel: str) -> None:
        while True:
            self.events.add(await layer.receive(channel))


async def _session_of(backend, stream_sid: str, timeout: float = 10.0):
    """The locmem session of a stream, once its speech in has connected it."""
    async with asyncio.timeout(timeout):
        while True:
            for session in backend.sessions:
                if session.stream_sid == stream_sid and session.connect_calls:
                    return session
            await asyncio.sleep(0.005)


# --- the rounds --------------------------------------------------------------------------------------------


@dataclass
class FencingResult:
    turns: int = 0
    cancelled: int = 0
    cancelled_thinking: int = 0  # the caller spoke again before the model's first token
    cancelled_synthesizing: int = 0  # ... after it, while the first sentence was synthesized
    played_before_interrupt: int = 0  # cancelled turns whose audio had legitimately started (a lost race)
    stale_frames: int = 0
    stale_turns: list[int] = field(default_factory=list)
    answered: int = 0
    answered_frames: int = 0
    answered_silent: list[int] = field(default_factory=list)  # answered turns that sent no frame
    problems: list[str] = field(default_factory=list)
    llm_requests: int = 0
    llm_aborted: int = 0
    seconds: float = 0.0


class Rounds:
    """The caller's script, shared by all calls: numbers, delays and timing draws."""

    def __init__(self, total: int, rng: random.Random, tts_first_chunk: float) -> None:
        self.left = total
        self.rng = rng
        self.delays: dict[str, float] = {}
        self.tts_first_chunk = tts_first_chunk
        self._numbers = iter(range(1, _TAG_BASE * _TAG_BASE))
        self.expected_cancelled: set[int] = set()  # numbers whose reply must be cancelled
        self.expected_answered: set[int] = set()
        self.phase_of: dict[int, str] = {}

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def utterance(self) -> tuple[int, str]:
        number = next(self._numbers)
        text = f"turn {number}"
        self.delays[text] = self.rng.uniform(*DELAY_RANGE)
        return number, text


async def _round(call: FencedCall, rounds: Rounds) -> None:
    rng = rounds.rng
    interruptions = 2 if rng.random() < 1 / 3 else 1
    number, text = rounds.utterance()
    since = len(call.events.items)
    call.stt.emit_final(text)
    for _ in range(interruptions):
        started = await call.events.wait("agent.turn.started", since, text=text)
        turn_id = started["data"]["turn_id"]
        phase = rng.choice(("thinking", "synthesizing"))
        if phase == "thinking":
            await asyncio.sleep(rng.uniform(0.0, rounds.delays[text] - 0.05))
        else:
            await call.events.wait("agent.first_token", since, turn_id=turn_id)
            await asyncio.sleep(rng.uniform(0.0, rounds.tts_first_chunk * 0.6))
        rounds.expected_cancelled.add(number)
        rounds.phase_of[number] = phase
        number, text = rounds.utterance()
        since = len(call.events.items)
        call.stt.emit_speech_started()  # the caller goes on talking...
        call.stt.emit_final(text)  # ... and this is the new turn
    started = await call.events.wait("agent.turn.started", since, text=text)
    rounds.expected_answered.add(number)
    await call.events.wait("agent.reply.finished", since, turn_id=started["data"]["turn_id"])


def _tally(calls: list[FencedCall], rounds: Rounds, result: FencingResult) -> None:
    for call in calls:
        items = call.tally.events
        number_of = {}  # turn_id -> the number the caller said
        for message in items:
            if message.get("event") == "agent.turn.started":
                found = _LAST_NUMBER.search(message["data"].get("text") or "")
                if found:
                    number_of[message["data"]["turn_id"]] = int(found.group(1))
        result.turns += len(number_of)
        cancelled = {m["data"]["turn_id"] for m in items if m.get("event") == "agent.reply.cancelled"}
        first_audio = {m["data"]["turn_id"] for m in items if m.get("event") == "agent.first_audio"}
        finished = {m["data"]["turn_id"]: m["data"] for m in items if m.get("event") == "agent.reply.finished"}
        for turn_id, number in number_of.items():
            frames = call.tally.frames_by_tag.get(number, 0)
            if turn_id in cancelled:
                result.cancelled += 1
                if number not in rounds.expected_cancelled:
                    result.problems.append(f"call {call.index}: turn {number} was cancelled, but was to be answered")
                if turn_id in first_audio:
                    result.played_before_interrupt += 1
                    continue
                if rounds.phase_of.get(number) == "thinking":
                    result.cancelled_thinking += 1
                else:
                    result.cancelled_synthesizing += 1
                if frames:
                    result.stale_frames += frames
                    result.stale_turns.append(number)
            elif turn_id in finished:
                result.answered += 1
                result.answered_frames += frames
                if not frames:
                    result.answered_silent.append(number)
                if finished[turn_id].get("interrupted"):
                    result.problems.append(f"call {call.index}: the reply to turn {number} was interrupted")
            else:
                result.problems.append(f"call {call.index}: turn {number} was neither cancelled nor finished")
        if call.tally.untagged_frames:
            result.problems.append(f"call {call.index}: {call.tally.untagged_frames} frames of other audio")


def fencing_settings(chat_base_url: str, tts_first_chunk_ms: float):
    """MEDIASTREAM for the run (override_settings): the slow model, the tagged TTS, locmem STT, no VAD."""
    from tests.support import mediastream_settings

    return mediastream_settings(
        AGENT={
            "BACKEND": "mediastream.agents.openai.ChatCompletionsAgent",
            "OPTIONS": {"API_KEY": "sk-test-key", "BASE_URL": chat_base_url, "MODEL": "fake-slow-model"},
        },
        TTS={"BACKEND": "bench.fencing.TaggedBackend", "OPTIONS": {"FIRST_CHUNK_MS": tts_first_chunk_ms}},
        TRANSCRIPTION={"BACKEND": "mediastream.transcription.locmem.LocmemBackend", "OPTIONS": {}},
        VAD={"ENABLED": False},
    )


async def run_fencing(
    rounds: int, *, calls: int = 1, seed: int = 1, tts_first_chunk_ms: float = 150.0, max_seconds: float = 600.0
) -> FencingResult:
    """Play ``rounds`` rounds over ``calls`` concurrent in-process calls; Django must be set up, with a database."""
    from mediastream.backends import backends

    delays: dict[str, float] = {}
    script = Rounds(rounds, random.Random(seed), tts_first_chunk_ms / 1000)
    script.delays = delays
    result = FencingResult()
    started = time.monotonic()
    async with slow_chat_server(delays) as server:
        with fencing_settings(server.base_url, tts_first_chunk_ms):
            fenced = [FencedCall(i) for i in range(calls)]

            async def play(call: FencedCall) -> None:
                while script.take():
                    await _round(call, script)

            try:
                async with asyncio.timeout(max_seconds):
                    await asyncio.gather(*(call.run(play) for call in fenced))
            finally:
                await backends.aclose_all()
        result.llm_requests = len(server.requests)
        result.llm_aborted = server.aborted
    result.seconds = time.monotonic() - started
    _tally(fenced, script, result)
    return result


# --- the script --------------------------------------------------------------------------------------------


def report(result: FencingResult, rounds: int, calls: int) -> str:
    lines = [
        f"Fencing: {rounds} rounds over {calls} concurrent calls in {result.seconds:.0f} s "
        f"(model's first token {DELAY_RANGE[0] * 1000:.0f}-{DELAY_RANGE[1] * 1000:.0f} ms after its request)",
        f"  caller turns                        {result.turns}",
        f"  cancelled turns                     {result.cancelled}"
        f"  (spoke again while the model thought: {result.cancelled_thinking}; "
        f"while its first sentence was synthesized: {result.cancelled_synthesizing}; "
        f"audio had already started, excluded: {result.played_before_interrupt})",
        f"  stale frames (cancelled turns)      {result.stale_frames}"
        + (f"  turns: {result.stale_turns[:20]}" if result.stale_turns else "")
        + ("  ok" if not result.stale_frames else "  FENCING BROKEN"),
        f"  replies that played                 {result.answered} ({result.answered_frames} frames, "
        f"{result.answered_frames * 20 / 1000:.1f} s of audio)"
        + (f"; {len(result.answered_silent)} sent no audio: {result.answered_silent[:20]}" if result.answered_silent else ""),
        f"  model streams closed by the agent   {result.llm_aborted} of {result.llm_requests} requests",
    ]
    if result.problems:
        lines.append(f"  problems ({len(result.problems)}):")
        lines += [f"    {p}" for p in result.problems[:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="rounds (each: 1-2 cancelled turns, one answered)")
    parser.add_argument("--calls", type=int, default=4, help="concurrent calls")
    parser.add_argument("--tts-ms", type=float, default=150.0, help="the TTS's time to first audio (ms)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be >= 1")

    from bench.common import create_database, drop_database, log

    run = f"{os.getpid()}x{secrets.token_hex(3)}"
    db_name = f"bench_fencing_{run}"
    log(f"database {db_name}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    database_url = create_database(db_name)
    status = 1
    try:
        os.environ.update(DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=database_url)
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        from django.db import connections

        connections.close_all()
        result = asyncio.run(
            run_fencing(args.rounds, calls=args.calls, seed=args.seed, tts_first_chunk_ms=args.tts_ms, max_seconds=args.max_seconds)
        )
        print(report(result, args.rounds, args.calls))
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        status = 0 if not result.stale_frames and not result.problems else 2
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(db_name)
    return status


if __name__ == "__main__":
    sys.exit(main())
