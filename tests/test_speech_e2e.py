"""Speech in, end to end: a real daphne process, real Redis and PostgreSQL, real audio.

The test process plays Twilio with :mod:`mediastream.simulator` and streams
speech made by Piper (:mod:`tests.audio_fixtures`, in a child process) at
real-time pace. Each backend configuration gets its own daphne process:

* the embedded default (Whisper tiny.en + local VAD): a transcript is stored
  once, and speaking over the agent barges in (``clear``, item interrupted);
* OpenAI Realtime pointed at a closed port: the call goes on without it;
* Deepgram pointed at a fake vendor server in this process (loopback): the
  session reconnects after the vendor drops it and transcripts keep coming;
* the discard backend with a greeting that caller speech may not interrupt.

Waiting is always on something happening (a message on the socket, a row in
the database, a connection at the fake vendor), never on a fixed sleep.

Without the ``speech`` extra the tests that need Piper or Whisper skip
(``requires_speech``); the OpenAI and Deepgram ones need neither and run.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import pytest
import redis.asyncio
from channels.db import database_sync_to_async
from django.test import override_settings

from mediastream.api import Outcome, aspeak
from mediastream.simulator import TwilioCall, TwilioStream
from voicecall.models import CallEvent, TranscriptSegment

from .audio_fixtures import SpeechClip, speech_clip
from .live import CONSTANT_TTS, Live, free_port
from .streams import hang_up, open_call, wait_for
from .support import requires_speech
from .vendors_stt.deepgram import FakeDeepgram

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

FRAME_MS = 20

WHISPER = {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}}
DISCARD = {"BACKEND": "mediastream.transcription.discard.DiscardBackend", "OPTIONS": {}}

#: About ten seconds of agent speech: long enough to be talked over.
LONG_ANSWER = "A long answer that keeps going and going. " * 6

BOOKING = "Please book a table for two at seven tonight."
INTERRUPTION = "Wait, stop."


# --- the server shared by the Whisper tests ----------------------------------------------------------


@pytest.fixture(scope="module")
def whisper_live(daphne):
    """The embedded default: Whisper tiny.en transcripts, local VAD barge-in."""
    with daphne.start({"TTS": CONSTANT_TTS, "TRANSCRIPTION": WHISPER}, name="daphne-whisper") as live:
        yield live


# --- Twilio's side -----------------------------------------------------------------------------


@dataclass
class Tap:
    """Everything the server sent on one stream, with receive times, and waits on it."""

    log: list[tuple[float, dict]] = field(default_factory=list)
    _waiters: list = field(default_factory=list)

    def record(self, message: dict, at: float) -> None:
        """The stream's ``on_message``."""
        self.log.append((at, message))
        for check, future in self._waiters:
            if not future.done() and check():
                future.set_result(None)

    def find(self, kind: str, since: int = 0) -> int | None:
        """Index of the first ``kind`` message at or after ``since``."""
        for index in range(since, len(self.log)):
            if self.log[index][1].get("event") == kind:
                return index
        return None

    async def wait(self, kind: str, since: int = 0, timeout: float = 10.0) -> int:
        """Index of the first ``kind`` message at or after ``since``, once it has arrived."""

        def check() -> bool:
            return self.find(kind, since) is not None

        if not check():
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((check, future))
            try:
                await asyncio.wait_for(future, timeout)
            finally:
                self._waiters = [w for w in self._waiters if w[1] is not future]
        return self.find(kind, since)

    def kinds(self, since: int = 0) -> list[str]:
        return [message.get("event") for _, message in self.log[since:]]


async def open_tapped_call(live: Live) -> tuple[TwilioCall, TwilioStream, Tap]:
    """A call whose stream the server admitted and registered for commands, tapped from its first message."""
    tap = Tap()
    call, stream = await open_call(live, on_message=tap.record, timeout=10)
    await joined(live, call.call_sid)
    return call, stream, tap


async def joined(live: Live, call_sid: str, timeout: float = 10.0) -> None:
    """Wait until the stream's consumer has registered its channel, so ``aspeak`` reaches it.

    The consumer registers after the stream row is committed, as the key
    ``<prefix>:mediastream:stream:<CallSid>`` (``mediastream.directory``).
    """
    client = redis.asyncio.Redis.from_url(live.redis_url)
    key = f"{live.prefix}:mediastream:stream:{call_sid}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not await client.exists(key):
            if loop.time() > deadline:
                raise AssertionError(f"no consumer registered for {call_sid} within {timeout}s")
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()


@dataclass
class Speaking:
    """A clip being streamed at real-time pace, with the send time (perf_counter) of each frame."""

    clip: SpeechClip
    task: asyncio.Task
    stream_offset_ms: int  # stream time of the clip's first frame
    sent: list[float] = field(default_factory=list)

    @property
    def onset_at(self) -> float:
        """When the frame holding the speech onset went out."""
        return self.sent[self.clip.onset_ms // FRAME_MS]

    @property
    def first_sound_at(self) -> float:
        """When the first frame that is not digital silence went out."""
        frames = self.clip.frames()
        return self.sent[next(i for i, frame in enumerate(frames) if frame.strip(b"\xff"))]


def speak_into(stream: TwilioStream, clip: SpeechClip) -> Speaking:
    """Start streaming ``clip`` at real-time pace."""
    speaking = Speaking(clip, None, stream.media_timestamp)  # type: ignore[arg-type]
    speaking.task = asyncio.create_task(
        stream.stream_audio(clip.mulaw, realtime=True, on_frame=lambda index, at: speaking.sent.append(at))
    )
    return speaking


def events(call_sid: str, kind: str) -> list[CallEvent]:
    return list(CallEvent.objects.filter(call__call_sid=call_sid, type=kind).order_by("id"))


def segments(call_sid: str, **filters) -> list[TranscriptSegment]:
    return list(TranscriptSegment.objects.filter(call__call_sid=call_sid, **filters).order_by("id"))


# The ORM from async code goes through database_sync_to_async (which closes the thread's
# connection when done), never the async ORM: its connection would outlive the test
# database and break its teardown ("being accessed by other users").
_events = database_sync_to_async(events)
_segments = database_sync_to_async(segments)


_NUMBERS = {"2": "two", "7": "seven"}


def words(text: str) -> set[str]:
    return {_NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9']+", text.lower())}


async def barge_in(live: Live, call: TwilioCall, stream: TwilioStream, tap: Tap, label: str) -> str:
    """Speak over a long agent item; check clear, silence after it and the recorded outcome. Returns the item id."""
    clip = speech_clip(INTERRUPTION)
    since = len(tap.log)
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        item_id = await aspeak(call.call_sid, LONG_ANSWER)
    first_media = await tap.wait("media", since, timeout=10)
    speaking = speak_into(stream, clip)
    cleared = await tap.wait("clear", first_media, timeout=10)
    await speaking.task
    cleared_at = tap.log[cleared][0]
    latency_ms = (cleared_at - speaking.onset_at) * 1000
    print(f"\n[{label}] barge-in: speech onset frame sent -> clear received: {latency_ms:.0f} ms")
    assert cleared_at > speaking.first_sound_at, "clear came before the caller made a sound"
    # Nothing of the interrupted item after the clear (no other item was queued).
    assert "media" not in tap.kinds(cleared), tap.kinds(cleared)
    finished = await wait_for(
        lambda: next((e for e in events(call.call_sid, "playback.finished") if e.payload["item_id"] == item_id), None),
        timeout=10,
    )
    assert finished.payload["outcome"] == "interrupted", finished.payload
    assert finished.payload["reason"] == "barge-in", finished.payload
    assert finished.payload["audio_seconds"] > 0
    # The clear answered this speech: the local VAD put a speech start at its onset.
    onset = speaking.stream_offset_ms + clip.onset_ms
    starts = [e.payload for e in await _events(call.call_sid, "speech.started")]
    assert any(p["source"] == "vad" and abs(p["offset_ms"] - onset) <= 200 for p in starts), (onset, starts)
    return item_id


# --- 1. Whisper: speech becomes one stored transcript ------------------------------------------------


@requires_speech
async def test_whisper_transcribes_piper_speech_once(whisper_live):
    clip = speech_clip(BOOKING)
    call, stream, _ = await open_tapped_call(whisper_live)
    speaking = speak_into(stream, clip)
    await speaking.task
    segment = await wait_for(
        lambda: TranscriptSegment.objects.filter(call__call_sid=call.call_sid, speaker="caller").first(), timeout=20
    )
    # Piper's output varies a little from run to run, and so does tiny.en's reading of it
    # ("Please spoke a table ..."): most of the words, not every one.
    expected, heard = words(BOOKING), words(segment.text)
    assert len(expected & heard) >= 0.75 * len(expected), segment.text
    # Offsets into the stream, around where the speech lies in the clip (VAD windows: 32 ms).
    assert segment.start_ms is not None and segment.end_ms is not None, segment
    assert abs(segment.start_ms - clip.onset_ms) <= 200, (segment.start_ms, clip.onset_ms)
    assert abs(segment.end_ms - clip.end_ms) <= 600, (segment.end_ms, clip.end_ms)
    assert segment.start_ms < segment.end_ms <= clip.duration_ms
    assert segment.is_final and not segment.interrupted

    await hang_up(stream)  # close() flushes the session: any late final would be stored by now
    assert len(await _segments(call.call_sid)) == 1
    finals = await _events(call.call_sid, "transcript.final")
    assert len(finals) == 1 and finals[0].payload["text"] == segment.text, [f.payload for f in finals]
    assert finals[0].payload["start_ms"] == segment.start_ms and finals[0].payload["end_ms"] == segment.end_ms
    starts = await _events(call.call_sid, "speech.started")
    assert len(starts) == 1, [s.payload for s in starts]
    assert starts[0].payload["source"] == "vad"
    assert abs(starts[0].payload["offset_ms"] - clip.onset_ms) <= 200, starts[0].payload
    assert not await _events(call.call_sid, "transcription.failed")


# --- 2. Whisper: speaking over the agent barges in -----------------------------------------------------


@requires_speech
async def test_speech_during_playback_barges_in(whisper_live):
    call, stream, tap = await open_tapped_call(whisper_live)
    item_id = await barge_in(whisper_live, call, stream, tap, "whisper + VAD")
    agent = await wait_for(
        lambda: TranscriptSegment.objects.filter(call__call_sid=call.call_sid, speaker="agent").first(), timeout=10
    )
    assert agent.interrupted and agent.text == LONG_ANSWER
    assert stream.clears == 1
    await hang_up(stream)
    finished = [e for e in await _events(call.call_sid, "playback.finished") if e.payload["item_id"] == item_id]
    assert len(finished) == 1


# --- 3. Transcription down: the call goes on ------------------------------------------------------------


async def test_transcription_backend_down_call_goes_on(daphne):
    closed = free_port()  # bound and released: nothing listens there
    overrides = {
        "TTS": CONSTANT_TTS,
        "TRANSCRIPTION": {
            "BACKEND": "mediastream.transcription.openai.OpenAIRealtimeBackend",
            "OPTIONS": {
                "API_KEY": "sk-test-not-a-key",
                "URL": f"ws://127.0.0.1:{closed}/v1/realtime?intent=transcription",
                "CONNECT_TIMEOUT": 3.0,
            },
        },
    }
    async with daphne.astart(overrides, name="daphne-openai-down") as live:
        call, stream, _ = await open_tapped_call(live)  # admitted although the vendor is unreachable
        failed = await wait_for(
            lambda: CallEvent.objects.filter(call__call_sid=call.call_sid, type="transcription.failed").first(),
            timeout=10,
        )
        assert failed.payload["backend"] == "OpenAIRealtimeBackend", failed.payload
        assert "OpenAI Realtime" in failed.payload["error"], failed.payload
        await stream.stream_audio(b"\xff" * 1600, realtime=False)  # inbound audio is still taken
        with override_settings(CHANNEL_LAYERS=live.channel_layers()):
            result = await aspeak(call.call_sid, "Still here, without transcripts.", wait=True, timeout=15)
        assert result.outcome is Outcome.PLAYED, result
        assert stream.media_frames and stream.close_code is None
        row = await hang_up(stream)
        assert row.stats["media_frames"] == 10
        assert not await _events(call.call_sid, "transcription.ready")


# --- 4. Deepgram: the vendor drops, the session reconnects ------------------------------------------------


async def test_deepgram_reconnects_after_vendor_drop(daphne):
    before = b"\xfe" * 1600  # 200 ms of near-silence (the VAD gate skips it), recognisable at the vendor
    after = b"\x7e" * 1600
    async with FakeDeepgram() as fake:
        overrides = {
            "TTS": CONSTANT_TTS,
            "TRANSCRIPTION": {
                "BACKEND": "mediastream.transcription.deepgram.DeepgramBackend",
                "OPTIONS": {
                    "API_KEY": "dg-test-key",
                    "URL": fake.url,
                    "RECONNECT_DELAY": 0.05,
                    "CONNECT_TIMEOUT": 5.0,
                    "CLOSE_TIMEOUT": 2.0,
                },
            },
        }
        async with daphne.astart(overrides, name="daphne-deepgram") as live:
            call, stream, _ = await open_tapped_call(live)
            first = await fake.wait_connections(1, timeout=10)
            assert first.headers["authorization"] == "Token dg-test-key"
            assert first.query["encoding"] == "mulaw" and first.query["sample_rate"] == "8000"
            await wait_for(
                lambda: CallEvent.objects.filter(call__call_sid=call.call_sid, type="transcription.ready").exists()
            )
            await stream.stream_audio(before, realtime=False)
            await fake.wait_for(lambda: len(FakeDeepgram.audio(first)) >= len(before), timeout=5)
            assert FakeDeepgram.audio(first) == before

            await fake.drop(first)
            await stream.stream_audio(after, realtime=False)  # sent while the session is down or reopening
            second = await fake.wait_connections(2, timeout=10)
            assert second is not first and second.headers["authorization"] == "Token dg-test-key"
            await fake.wait_for(lambda: len(FakeDeepgram.audio(second)) >= len(after), timeout=5)
            assert FakeDeepgram.audio(second) == after, "audio after the drop must go to the new connection"

            # Deepgram times results from the start of *its* connection: 0.1 s + 1.2 s into the second one.
            await fake.results("book a table for two", is_final=True, speech_final=True, start=0.1, duration=1.2)
            segment = await wait_for(
                lambda: TranscriptSegment.objects.filter(call__call_sid=call.call_sid, speaker="caller").first(),
                timeout=10,
            )
            assert segment.text == "book a table for two"
            offset = len(before) // 8  # stream time of the first byte the second connection got
            assert (segment.start_ms, segment.end_ms) == (offset + 100, offset + 1300)
            await hang_up(stream)
            assert len(fake.connections) == 2
            assert second.of_type("CloseStream"), "the session closes the live connection cleanly"
            assert len(await _segments(call.call_sid)) == 1
            assert not await _events(call.call_sid, "transcription.failed")


# --- 5. Greeting: caller speech may not cut it off, later items can be ------------------------------------


GREETING = "Thanks for calling the Riverside Bistro. Please hold on while I check the bookings for this evening."


@requires_speech
async def test_greeting_is_not_barged_in_but_later_items_are(daphne):
    overrides = {
        "TTS": CONSTANT_TTS,  # the greeting: about four seconds
        "TRANSCRIPTION": DISCARD,  # local VAD only
        "STREAM_GREETING": GREETING,
        "SUPPRESS_BARGE_IN_DURING_GREETING": True,
    }
    clip = speech_clip(INTERRUPTION)
    assert len(GREETING) * 40 > clip.end_ms + 1500
    async with daphne.astart(overrides, name="daphne-greeting") as live:
        call, stream, tap = await open_tapped_call(live)
        await tap.wait("media", timeout=10)  # the greeting is playing
        speaking = speak_into(stream, clip)
        await speaking.task
        started = await wait_for(lambda: events(call.call_sid, "speech.started"), timeout=10)
        greeting = await wait_for(
            lambda: [e for e in events(call.call_sid, "playback.finished") if e.payload["text"] == GREETING],
            timeout=15,
        )
        greeting = greeting[0]
        assert greeting.payload["outcome"] == "played", greeting.payload
        assert started[0].id < greeting.id, "the caller spoke while the greeting played"
        assert stream.clears == 0 and "clear" not in tap.kinds()

        await barge_in(live, call, stream, tap, "greeting config, discard + VAD")
        assert stream.clears == 1
        await hang_up(stream)
        agent = await _segments(call.call_sid, speaker="agent")
        assert [(s.text, s.interrupted) for s in agent] == [(GREETING, False), (LONG_ANSWER, True)]
