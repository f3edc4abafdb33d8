"""An agent holds a real stream: turns, streamed replies, tools, fencing, history, the end of a call.

In-process streams (the production consumer through WebsocketCommunicator,
PostgreSQL), the locmem transcription backend playing the provider (the test
says what the caller said), the constant TTS, and the embedded ScriptedAgent
with the restaurant demo script.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from mediastream.backends import backends
from mediastream.closing import CLOSES
from voicecall.models import CallEvent, TranscriptSegment

from .streams import live_stream, mark, receive_close, wait_for
from .support import mediastream_settings

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

DEMO = {"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"SCRIPT": "mediastream.agents.demo"}}
TTS = {"BACKEND": "mediastream.tts.dummy.ConstantBackend", "OPTIONS": {"VALUE": 3000, "SAMPLE_RATE": 8000, "MS_PER_CHAR": 2, "MIN_MS": 100}}
LOCMEM = {"BACKEND": "mediastream.transcription.locmem.LocmemBackend", "OPTIONS": {}}


def agent_settings(agent=DEMO, **overrides):
    return mediastream_settings(AGENT=agent, TTS=TTS, TRANSCRIPTION=LOCMEM, VAD={"ENABLED": False}, **overrides)


class Twilio:
    """Plays Twilio's side of the socket: collects media, echoes every mark at once."""

    def __init__(self, comm, stream_sid: str) -> None:
        self.comm, self.stream_sid = comm, stream_sid
        self.frames = 0
        self.clears = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            output = await self.comm.receive_output(30)
            if output["type"] != "websocket.send":
                return
            message = json.loads(output["text"])
            if message["event"] == "media":
                self.frames += 1
            elif message["event"] == "clear":
                self.clears += 1
            elif message["event"] == "mark":
                await self.comm.send_to(text_data=mark(self.stream_sid, message["mark"]["name"]))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _events(call, type_):
    return list(CallEvent.objects.filter(call=call, type=type_).order_by("id").values_list("payload", flat=True))


async def events(call, type_):
    return await database_sync_to_async(_events)(call, type_)


async def provider() -> object:
    """The stream's locmem transcription session (it exists once the stream's parts are up)."""
    sessions = backends.transcription.sessions
    await wait_for(lambda: bool(sessions))
    return sessions[-1]


async def caller_says(text: str) -> None:
    (await provider()).emit_final(text)


async def test_the_agent_greets_answers_a_turn_and_logs_every_step():
    with agent_settings():
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            # The greeting plays to the end (marks echoed) and is part of the conversation.
            await wait_for(lambda: TranscriptSegment.objects.filter(call=call, speaker="agent").exists(), timeout=10)
            await caller_says("What are your opening hours?")
            finished = await wait_for(lambda: _events(call, "agent.reply.finished"), timeout=10)
            await twilio.stop()
    [started] = await events(call, "agent.turn.started")
    assert started["turn_id"] == 1 and started["text"] == "What are your opening hours?"
    assert finished[0]["turn_id"] == 1 and "noon to ten" in finished[0]["heard_text"]
    [first_token] = await events(call, "agent.first_token")
    [first_audio] = await events(call, "agent.first_audio")
    assert 0 <= first_token["ms"] <= first_audio["ms"] <= finished[0]["ms"]
    assert twilio.frames > 0
    agent_lines = await database_sync_to_async(
        lambda: list(TranscriptSegment.objects.filter(call=call, speaker="agent").values_list("text", flat=True))
    )()
    assert agent_lines[0].startswith("Hello, thanks for calling Luigi's") and "noon to ten" in agent_lines[1]


@pytest.mark.parametrize("default_agent", [None, {"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"GREETING": "Default agent here."}}])
async def test_a_call_placed_with_its_own_agent_gets_it_with_or_without_a_default_agent(default_agent):
    """``place_call(agent=...)`` stores the config on the call row; the stream reads it at admission."""
    with agent_settings(agent=default_agent):
        async with live_stream(call_fields={"agent": DEMO}) as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            greeting = await wait_for(
                lambda: TranscriptSegment.objects.filter(call=call, speaker="agent").values_list("text", flat=True).first(), timeout=10
            )
            await twilio.stop()
    assert greeting.startswith("Hello, thanks for calling Luigi's")


async def test_no_agent_anywhere_leaves_the_call_to_signals_and_speak(monkeypatch):
    def no_lookup(admitted):
        raise AssertionError("nothing can choose an agent: the database is not asked")

    monkeypatch.setattr("mediastream.parts._agent_and_history", no_lookup)
    with agent_settings(agent=None):
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            await caller_says("Is anybody there?")
            await wait_for(lambda: TranscriptSegment.objects.filter(call=call, speaker="caller").exists(), timeout=10)
            await twilio.stop()
    assert await events(call, "agent.turn.started") == []
    assert twilio.frames == 0


async def test_a_tool_books_the_table_and_the_reply_uses_its_result():
    with agent_settings():
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            await caller_says("I'd like to book a table for 4 at 7 pm")
            finished = await wait_for(lambda: _events(call, "agent.reply.finished"), timeout=10)
            await twilio.stop()
    [called] = await events(call, "agent.tool.called")
    [result] = await events(call, "agent.tool.result")
    assert called["name"] == "book_table" and called["arguments"] == {"party_size": "4", "time": "7 pm"}  # as asked
    assert result["ok"] is True and result["call_id"] == called["call_id"]
    reference = json.loads(result["output"])["reference"]
    text = finished[0]["text"]
    assert text.startswith("Let me check that for you.") and reference in text and "for 4" in text


async def test_a_keypress_is_answered():
    with agent_settings():
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            await comm.send_to(
                text_data=json.dumps({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": "5", "dtmf": {"digit": "1"}})
            )
            finished = await wait_for(lambda: _events(call, "agent.reply.finished"), timeout=10)
            await twilio.stop()
    assert "noon to ten" in finished[0]["text"]
    assert (await events(call, "agent.turn.started"))[0]["dtmf"] == "1"


async def test_a_stale_reply_is_never_played():
    # A slow model: the caller speaks again before the first reply is written.
    slow = {**DEMO, "OPTIONS": {**DEMO["OPTIONS"], "DELAY_MS": 400}}
    with agent_settings(agent=slow):
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            await wait_for(lambda: _events(call, "playback.finished"), timeout=10)  # the greeting is over
            frames_before = twilio.frames
            await caller_says("What are your opening hours?")
            await wait_for(lambda: _events(call, "agent.turn.started"))
            (await provider()).emit_speech_started()  # the caller goes on talking
            await caller_says("Actually, press 2 for me.")
            finished = await wait_for(lambda: _events(call, "agent.reply.finished"), timeout=10)
            await twilio.stop()
    cancelled = await events(call, "agent.reply.cancelled")
    assert [c["turn_id"] for c in cancelled] == [1] and cancelled[0]["reason"] == "caller spoke again"
    assert [f["turn_id"] for f in finished] == [2]
    first_audio = await events(call, "agent.first_audio")
    assert [a["turn_id"] for a in first_audio] == [2]  # turn 1 never sent a frame
    assert twilio.frames > frames_before


async def test_goodbye_ends_the_call_after_the_goodbye_played():
    with agent_settings():
        async with live_stream() as (comm, call, stream_sid):
            reader = None
            await caller_says("That's all, goodbye")
            # Echo marks until the agent closes the socket.
            while True:
                output = await comm.receive_output(10)
                if output["type"] == "websocket.close":
                    reader = output
                    break
                message = json.loads(output["text"])
                if message["event"] == "mark":
                    await comm.send_to(text_data=mark(stream_sid, message["mark"]["name"]))
    assert reader["code"] == CLOSES.AGENT_ENDED.code
    [finished] = await events(call, "agent.reply.finished")
    assert finished["heard_text"] == "Thanks for calling Luigi's. Goodbye!"


async def test_the_history_survives_a_new_stream_for_the_same_call():
    from mediastream.agents.history import load_history

    with agent_settings():
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            await wait_for(lambda: _events(call, "playback.finished"), timeout=10)  # the greeting is over
            await caller_says("I'd like to book a table for 2 at 8 pm")
            await wait_for(lambda: _events(call, "agent.reply.finished"), timeout=10)
            await twilio.stop()
    history = await database_sync_to_async(load_history)(call.pk)
    roles = [m.role for m in history]
    assert roles[:2] == ["assistant", "user"]  # the greeting, then the caller
    assert "assistant" in roles[2:] and "tool" in roles
    [tool] = [m for m in history if m.role == "tool"]
    [asked] = [m for m in history if m.tool_calls]
    assert asked.tool_calls[0].id == tool.tool_call_id and asked.tool_calls[0].name == "book_table"
