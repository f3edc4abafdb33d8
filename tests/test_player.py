"""Speech-out queue and pacing, driven directly (no sockets, no Django DB)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from mediastream.playback.textsplit import split_text
from mediastream.playback.player import Outcome, PlaybackItem, PlayerConfig, StreamPlayer
from mediastream.tts.base import AudioChunk, BaseTTSBackend, TTSError
from mediastream.tts.dummy import ConstantBackend, SilenceBackend

pytestmark = pytest.mark.asyncio

STREAM = "MZ" + "0" * 32


class ScriptedBackend(BaseTTSBackend):
    """A TTS backend a test steers: per-text gates, failures and empty results."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.fail: dict[str, Exception] = {}
        self.empty: set[str] = set()
        self.hang: set[str] = set()
        self.finished: list[str] = []

    async def synthesize(self, text):
        self.calls.append(text)
        if text in self.hang:
            await asyncio.Event().wait()
        gate = self.gates.get(text)
        if gate is not None:
            await gate.wait()
        if text in self.fail:
            raise self.fail[text]
        if text in self.empty:
            return
        self.finished.append(text)
        yield AudioChunk(b"\x00\x00" * 800, "pcm_s16le", 8000)  # 100 ms of PCM zeros -> 0xFF


class Wire:
    """What the player sent, decoded, plus the results it reported."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.results: dict[str, object] = {}
        self.order: list[str] = []
        self.done: dict[str, asyncio.Event] = {}
        self.sent = asyncio.Event()

    async def send(self, text: str) -> None:
        self.messages.append(json.loads(text))
        self.sent.set()

    def on_result(self, item, result) -> None:
        assert item.id not in self.results, "an item resolved twice"
        self.results[item.id] = result
        self.order.append(item.id)
        self.done.setdefault(item.id, asyncio.Event()).set()

    async def result(self, item_id: str, timeout: float = 5):
        event = self.done.setdefault(item_id, asyncio.Event())
        await asyncio.wait_for(event.wait(), timeout)
        return self.results[item_id]

    def events(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["event"] == kind]

    def media_bytes(self) -> bytes:
        return b"".join(base64.b64decode(m["media"]["payload"]) for m in self.events("media"))

    async def mark_sent(self, suffix: str = ":end", timeout: float = 5) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for m in self.events("mark"):
                if m["mark"]["name"].endswith(suffix):
                    return m["mark"]["name"]
            self.sent.clear()
            await asyncio.wait_for(self.sent.wait(), max(0.001, deadline - loop.time()))


def make_player(wire: Wire, backend: BaseTTSBackend, **config) -> StreamPlayer:
    config.setdefault("lead_seconds", 10.0)  # send at once unless a test is about pacing
    config.setdefault("mark_grace_seconds", 5.0)
    return StreamPlayer(
        stream_sid=STREAM, send=wire.send, tts=lambda: backend, on_result=wire.on_result, config=PlayerConfig(**config)
    )


def paced_player(wire: Wire, time_: VirtualTime, duration_ms: int, *, send=None, **config) -> StreamPlayer:
    """A player of ``duration_ms`` of constant audio per item, on virtual time (its pacing is what is tested)."""
    return StreamPlayer(
        stream_sid=STREAM,
        send=send or wire.send,
        tts=lambda: ConstantBackend(VALUE=500, SAMPLE_RATE=8000, DURATION_MS=duration_ms),
        on_result=wire.on_result,
        config=PlayerConfig(**config),
        clock=time_.clock,
        sleep=time_.sleep,
    )


async def echo_end_mark(wire: Wire, player: StreamPlayer, item_id: str) -> None:
    name = await wire.mark_sent(f"{item_id}:end")
    assert player.on_mark(name)


async def test_items_play_one_at_a_time_in_order():
    wire, backend = Wire(), ScriptedBackend()
    player = make_player(wire, backend)
    first, second = PlaybackItem(text="first"), PlaybackItem(text="second")
    assert player.enqueue(first) and player.enqueue(second)
    await wire.mark_sent(f"{first.id}:end")
    assert backend.calls == ["first"]  # the second item waits for the first's mark echo
    await echo_end_mark(wire, player, first.id)
    assert (await wire.result(first.id)).outcome is Outcome.PLAYED
    await echo_end_mark(wire, player, second.id)
    assert (await wire.result(second.id)).outcome is Outcome.PLAYED
    assert wire.order == [first.id, second.id]
    await player.close()


async def test_queue_overflow_rejects_at_once_and_spares_other_streams():
    wire, backend = Wire(), ScriptedBackend()
    backend.gates["busy"] = asyncio.Event()
    player = make_player(wire, backend, max_pending=8)
    active = PlaybackItem(text="busy")
    player.enqueue(active)
    await asyncio.sleep(0)  # the worker takes the first item
    waiting = [PlaybackItem(text=f"w{i}") for i in range(8)]
    assert all(player.enqueue(item) for item in waiting)
    extra = PlaybackItem(text="one too many")
    assert not player.enqueue(extra)
    assert wire.results[extra.id].outcome is Outcome.REJECTED
    other_wire = Wire()
    other = make_player(other_wire, ScriptedBackend())
    assert other.enqueue(PlaybackItem(text="fine"))
    await player.close()
    await other.close()
    assert {wire.results[i.id].outcome for i in waiting} == {Outcome.INTERRUPTED}


async def test_interrupt_during_synthesis_discards_late_audio():
    wire, backend = Wire(), ScriptedBackend()
    backend.gates["slow"] = gate = asyncio.Event()
    player = make_player(wire, backend)
    playing, queued = PlaybackItem(text="slow"), PlaybackItem(text="queued")
    player.enqueue(playing)
    player.enqueue(queued)
    while not backend.calls:
        await asyncio.sleep(0)
    assert await player.interrupt("barge-in") == 2
    gate.set()  # synthesis finishes after the interrupt
    assert (await wire.result(playing.id)).outcome is Outcome.INTERRUPTED
    assert (await wire.result(queued.id)).reason == "barge-in"
    await asyncio.sleep(0.05)
    assert wire.events("media") == []
    assert [m["event"] for m in wire.messages] == ["clear"]
    assert backend.calls == ["slow"]  # the queued item never synthesized
    await player.close()


async def test_interrupt_during_playback_stops_frames_and_ignores_cleared_marks():
    wire, backend = Wire(), ConstantBackend(VALUE=1000, SAMPLE_RATE=8000, DURATION_MS=2000)
    player = make_player(wire, backend, lead_seconds=0.1)
    item = PlaybackItem(text="a long sentence")
    player.enqueue(item)
    await wire.mark_sent("progress-1", timeout=5)  # a second of audio is out
    await player.interrupt("barge-in")
    frames_at_clear = len(wire.events("media"))
    result = await wire.result(item.id)
    assert result.outcome is Outcome.INTERRUPTED
    await asyncio.sleep(0.1)
    assert len(wire.events("media")) == frames_at_clear
    assert wire.messages[-1]["event"] == "clear"
    # Twilio echoes cleared marks: they confirm nothing.
    assert player.on_mark("progress-1") is False
    assert wire.results[item.id].outcome is Outcome.INTERRUPTED
    await player.close()


async def test_mark_not_echoed_resolves_unconfirmed_after_duration_plus_grace():
    wire = Wire()
    player = make_player(wire, SilenceBackend(DURATION_MS=40), mark_grace_seconds=0.05)
    item = PlaybackItem(text="hi")
    player.enqueue(item)
    result = await wire.result(item.id, timeout=2)
    assert result.outcome is Outcome.UNCONFIRMED
    assert result.audio_seconds == pytest.approx(0.04)
    await player.close()


async def test_teardown_resolves_everything():
    wire, backend = Wire(), ScriptedBackend()
    backend.hang.add("stuck")
    player = make_player(wire, backend)
    items = [PlaybackItem(text="stuck"), PlaybackItem(text="a"), PlaybackItem(text="b")]
    for item in items:
        player.enqueue(item)
    while not backend.calls:
        await asyncio.sleep(0)
    await player.close()
    assert [wire.results[i.id].outcome for i in items] == [Outcome.INTERRUPTED] * 3
    late = PlaybackItem(text="after close")
    assert not player.enqueue(late)
    assert wire.results[late.id].outcome is Outcome.REJECTED


@pytest.mark.parametrize(
    "setup,error",
    [
        (lambda b: b.fail.__setitem__("bad", TTSError("vendor said no")), "synthesis failed: vendor said no"),
        (lambda b: b.empty.add("bad"), "synthesis produced no audio"),
        (lambda b: b.hang.add("bad"), "synthesis timed out after 0.1s"),
    ],
)
async def test_synthesis_failure_fails_that_item_only(setup, error):
    wire, backend = Wire(), ScriptedBackend()
    setup(backend)
    player = make_player(wire, backend, synthesis_timeout=0.1)
    bad, good = PlaybackItem(text="bad"), PlaybackItem(text="good")
    player.enqueue(bad)
    player.enqueue(good)
    result = await wire.result(bad.id)
    assert result.outcome is Outcome.FAILED
    assert error in result.error
    await echo_end_mark(wire, player, good.id)
    assert (await wire.result(good.id)).outcome is Outcome.PLAYED
    assert not [m for m in wire.events("mark") if m["mark"]["name"].startswith(bad.id)]
    await player.close()


async def test_pcm_1000_becomes_whole_frames_of_0xce():
    wire = Wire()
    player = make_player(wire, ConstantBackend(VALUE=1000, SAMPLE_RATE=24000, DURATION_MS=200))
    item = PlaybackItem(text="x")
    player.enqueue(item)
    await echo_end_mark(wire, player, item.id)
    await wire.result(item.id)
    messages = [base64.b64decode(m["media"]["payload"]) for m in wire.events("media")]
    assert [len(m) for m in messages] == [800, 800]  # 200 ms in two messages of the default 100 ms
    # The resampler's edges ramp; the body of the utterance is exactly 0xCE.
    body = b"".join(messages)[80:-80]
    assert set(body) == {0xCE}
    await player.close()


async def test_ready_mulaw_audio_is_framed_and_padded_with_silence():
    wire = Wire()
    player = make_player(wire, ScriptedBackend())
    item = PlaybackItem(audio=b"\x10" * 500)
    player.enqueue(item)
    await echo_end_mark(wire, player, item.id)
    result = await wire.result(item.id)
    messages = [base64.b64decode(m["media"]["payload"]) for m in wire.events("media")]
    assert [len(m) for m in messages] == [640]  # whole frames, in one message (under the 100 ms chunk)
    assert b"".join(messages) == b"\x10" * 500 + b"\xff" * 140
    assert result.audio_seconds == pytest.approx(0.08)
    await player.close()


async def test_long_text_is_split_and_the_next_piece_synthesized_while_one_plays():
    wire, backend = Wire(), ScriptedBackend()
    sentences = [f"Sentence number {i} is here." for i in range(30)]
    text = " ".join(sentences)
    assert len(text) > 320
    pieces = split_text(text, 320)
    assert len(pieces) >= 3
    backend.gates[pieces[1]] = second_piece_gate = asyncio.Event()
    player = make_player(wire, backend, max_chars=320)
    item = PlaybackItem(text=text)
    player.enqueue(item)
    while len(backend.calls) < 2 or len(wire.media_bytes()) < 800:
        wire.sent.clear()
        await asyncio.wait_for(wire.sent.wait(), 5)
    # The second piece is being synthesized while the first is already on the wire.
    assert backend.calls == pieces[:2]
    assert len(wire.media_bytes()) >= 800
    second_piece_gate.set()
    await echo_end_mark(wire, player, item.id)
    await wire.result(item.id)
    assert "".join(backend.calls) == text
    assert len(backend.calls) >= 3 and all(len(p) <= 320 for p in backend.calls)
    await player.close()


class VirtualTime:
    """A clock and sleep that advance together, so pacing is checked exactly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.mark.parametrize("chunk_ms", [20, 100, 320])
async def test_pacing_keeps_a_bounded_lead_on_an_absolute_clock(chunk_ms):
    wire, time_ = Wire(), VirtualTime()
    sent: list[tuple[float, int]] = []  # (when, frames) per media message

    async def send(text: str) -> None:
        message = json.loads(text)
        if message["event"] == "media":
            sent.append((time_.now, len(base64.b64decode(message["media"]["payload"])) // 160))
        await wire.send(text)

    player = paced_player(wire, time_, 3000, send=send, lead_seconds=0.3, mark_grace_seconds=0.01, chunk_ms=chunk_ms)
    player.enqueue(PlaybackItem(text="three seconds"))
    await wire.mark_sent(":end")
    frames = chunk_ms // 20
    # One message per chunk (3 s of 20 ms frames), the tail in a shorter one.
    assert [n for _, n in sent] == [frames] * (150 // frames) + ([150 % frames] if 150 % frames else [])
    start, first_frame = sent[0][0], 0
    for at, n in sent:
        # The message's last frame plays at start + (first + n - 1)*20ms; the message goes out the lead
        # before that and (with no scheduling delay) never later either: no drift, never ahead of the bound.
        assert at == pytest.approx(max(start, start + (first_frame + n - 1) * 0.02 - 0.3), abs=1e-9)
        buffered_after = start + (first_frame + n) * 0.02 - at
        assert buffered_after <= 0.3 + 0.02 + 1e-9  # the lead plus one frame, whatever the chunk
        assert first_frame == 0 or start + first_frame * 0.02 >= at  # Twilio never ran dry
        first_frame += n
    # The initial lead goes out at once: 300 ms + the first frame, in whole messages.
    assert sum(n for at, n in sent if at == start) == 16 // frames * frames
    await player.close()


async def test_a_source_slower_than_real_time_has_its_audio_sent_as_it_arrives():
    wire = Wire()
    player = make_player(wire, ScriptedBackend())
    stream: asyncio.Queue = asyncio.Queue()
    item = PlaybackItem(stream=stream)
    player.enqueue(item)

    async def sent_bytes(count: int) -> None:
        while len(wire.media_bytes()) < count:
            wire.sent.clear()
            await asyncio.wait_for(wire.sent.wait(), 5)

    await stream.put(b"\x10" * 240)  # 30 ms: its whole frame goes now, not when a 100 ms message is full
    await sent_bytes(160)
    await stream.put(b"\x20" * 240)  # with the 10 ms held back: two frames
    await sent_bytes(480)
    await stream.put(None)
    await echo_end_mark(wire, player, item.id)
    assert (await wire.result(item.id)).outcome is Outcome.PLAYED
    assert [len(base64.b64decode(m["media"]["payload"])) for m in wire.events("media")] == [160, 320]
    assert wire.media_bytes() == b"\x10" * 240 + b"\x20" * 240
    await player.close()


async def test_a_sentence_s_audio_is_all_sent_while_the_next_one_is_still_being_synthesized():
    """A streamed reply: the first sentence's whole frames go out at once, not after the second's synthesis."""
    held = asyncio.Event()

    class SlowSecondSentence(BaseTTSBackend):
        async def synthesize(self, text):
            if text.startswith("Two"):
                await held.wait()  # a slow TTS: longer than Twilio's buffer lasts
            yield AudioChunk(b"\x10\x10" * 1120, "pcm_s16le", 8000)  # 140 ms

    wire = Wire()
    player = make_player(wire, SlowSecondSentence(), lead_seconds=0.3, chunk_ms=100)
    stream: asyncio.Queue = asyncio.Queue()
    item = PlaybackItem(stream=stream)
    player.enqueue(item)
    await stream.put("One.")
    await stream.put("Two.")
    while len(wire.media_bytes()) < 1120:  # all of sentence one (7 frames), with sentence two held
        wire.sent.clear()
        await asyncio.wait_for(wire.sent.wait(), 5)
    assert len(wire.media_bytes()) == 1120
    held.set()
    await stream.put(None)
    await echo_end_mark(wire, player, item.id)
    assert (await wire.result(item.id)).outcome is Outcome.PLAYED
    assert len(wire.media_bytes()) == 2240
    await player.close()


async def test_progress_marks_follow_each_second_of_audio_in_chunked_messages():
    wire, time_ = Wire(), VirtualTime()
    player = paced_player(wire, time_, 2500, lead_seconds=0.3, mark_grace_seconds=0.01, chunk_ms=100)
    player.enqueue(PlaybackItem(text="two and a half seconds"))
    await wire.mark_sent(":end")
    audio = 0
    at_marks = []
    for message in wire.messages:
        if message["event"] == "media":
            audio += len(base64.b64decode(message["media"]["payload"]))
        elif message["event"] == "mark":
            name = message["mark"]["name"]
            at_marks.append(("end" if name.endswith(":end") else name.split("-")[0], audio))
    assert at_marks == [("progress", 8000), ("progress", 16000), ("end", 20000)]
    await player.close()


async def test_an_interrupted_item_was_heard_for_as_long_as_it_played():
    wire, time_ = Wire(), VirtualTime()
    first_sent: list[float] = []

    async def send(text: str) -> None:
        if not first_sent and json.loads(text)["event"] == "media":
            first_sent.append(time_.now)
        await wire.send(text)

    player = paced_player(wire, time_, 3000, send=send, lead_seconds=0.3, mark_grace_seconds=0.01, chunk_ms=100)
    item = PlaybackItem(text="three seconds")
    player.enqueue(item)
    await wire.mark_sent("progress-1")
    await player.interrupt("barge-in")
    result = await wire.result(item.id)
    assert result.outcome is Outcome.INTERRUPTED
    # Twilio played from the first message on, without a gap; what it still held was cleared.
    assert result.heard_seconds == pytest.approx(time_.now - first_sent[0], abs=1e-3)
    assert result.audio_seconds - result.heard_seconds == pytest.approx(0.32, abs=0.1 + 1e-3)
    await player.close()


async def test_a_mark_round_trip_is_how_late_its_echo_came_after_the_audio_played():
    wire, time_ = Wire(), VirtualTime()
    player = paced_player(wire, time_, 1000, lead_seconds=0.3, mark_grace_seconds=5.0)
    player.enqueue(PlaybackItem(text="one second"))
    name = await wire.mark_sent(":end")
    assert player.mark_rtt_ms is None
    # The last frame went out the lead (0.3 s) before it starts playing, and plays for 20 ms;
    # the echo comes 80 ms after that.
    time_.now += 0.3 + 0.02 + 0.08
    player.on_mark(name)
    try:
        assert player.mark_rtt_ms == pytest.approx(80.0, abs=0.5)
    finally:
        await player.close()
