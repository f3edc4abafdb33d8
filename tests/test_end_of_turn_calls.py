"""The end-of-turn model on a live stream: a caller who pauses mid-number is not answered until done.

An in-process stream (the production consumer through WebsocketCommunicator,
PostgreSQL), the ScriptedAgent demo, the locmem transcription backend playing
the provider (the test says when a final comes and what it says), and the real
Smart Turn v3.2 model judging the real audio the caller sent: a committed human
recording (Free Spoken Digit Dataset, tests/speech_set/human) of a phone number
read in three groups, "five five five | two three four | eight nine one zero",
with 800 ms pauses between them; the test's provider gives finals at the first
pause and at the end. The model's probabilities for that audio vary with the
CPU's floating-point kernels (0.06 on one machine, 0.75 on another for the first
pause; about 0.9 at the end), and its accuracy is measured in
bench/end_of_turn.py: here the threshold is set between the two probabilities
this machine's model gives, so the test proves what the stream does with the
model's verdicts. With the VAD alone the first pause would end the turn.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from mediastream import endofturn
from mediastream.backends import backends
from voicecall.models import CallEvent

from .streams import live_stream, media, wait_for
from .support import mediastream_settings, requires_speech
from .test_agent_calls import DEMO, LOCMEM, TTS, Twilio

INSTALLED = endofturn.models_dir() / endofturn.MODEL_FILE
requires_model = pytest.mark.skipif(
    not INSTALLED.is_file(),
    reason=f"the Smart Turn model is not installed at {INSTALLED} (bin/setup speech,smart-turn extracts it)",
)
pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), requires_model, requires_speech]

PARTS = ["five five five", "two three four eight nine one zero"]


def _events(call, type_):
    return list(CallEvent.objects.filter(call=call, type=type_).order_by("id").values_list("payload", flat=True))


def _george():
    from tests import speech_set

    [turn] = [t for t in speech_set.human_turns(pause_ms=800) if t.id == "fsdd-george"]
    assert len(turn.pauses) == 2
    return turn


async def _send(comm, stream_sid: str, audio: bytes, seq: list[int]) -> None:
    for i in range(0, len(audio), 160):
        seq[0] += 1
        await comm.send_to(text_data=media(stream_sid, audio[i : i + 160], seq=seq[0], chunk=seq[0]))


async def test_a_pause_the_model_calls_incomplete_does_not_end_the_turn():
    turn = _george()
    (first_pause, _second), end = turn.pauses, turn.speech_end_ms
    # Where the VAD would call the silence (its hang after the last word) and the finals come.
    cuts = [first_pause[0] + 400, end + 400]
    spans = [(0, first_pause[0]), (first_pause[1], end)]
    model = endofturn.EndOfTurn()
    at_pause, at_end = (model.probability(endofturn.pcm16k_from_mulaw(turn.mulaw[: cut * 8])) for cut in cuts)
    assert at_pause < at_end - 0.05, (at_pause, at_end)  # the model hears the end as more complete than the pause
    threshold = (at_pause + at_end) / 2
    settings = mediastream_settings(
        AGENT=DEMO, TTS=TTS, TRANSCRIPTION=LOCMEM, VAD={"ENABLED": False},
        # The fallback must not decide here.
        END_OF_TURN={"MODEL": "smart-turn", "FALLBACK_SECONDS": 30.0, "THRESHOLD": threshold},
    )  # fmt: skip
    with settings:
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            sessions = backends.transcription.sessions
            await wait_for(lambda: bool(sessions))
            provider = sessions[-1]
            seq, sent = [1], 0
            for index, (cut, (start_ms, end_ms)) in enumerate(zip(cuts, spans)):
                await _send(comm, stream_sid, turn.mulaw[sent * 8 : cut * 8], seq)
                sent = cut
                await provider.wait_for_audio(cut * 8)  # the stream has all of it, so the model hears it
                provider.emit_final(PARTS[index], start_ms, end_ms)
                checks = await wait_for(lambda: (found := _events(call, "agent.turn.checked"))[index:] and found, timeout=10)
                if index == 0:
                    assert checks[index]["complete"] is False, checks
                    assert not await database_sync_to_async(_events)(call, "agent.turn.started")
            [started] = await wait_for(lambda: _events(call, "agent.turn.started"), timeout=10)
            await twilio.stop()
    assert started["text"] == " ".join(PARTS)
    assert [v["complete"] for v in started["end_of_turn"]] == [False, True]
    assert all(0 <= v["probability"] <= 1 for v in started["end_of_turn"])
    [checked] = [c for c in await database_sync_to_async(_events)(call, "agent.turn.checked") if c["complete"]]
    assert checked["probability"] >= threshold and checked["model_ms"] > 0

