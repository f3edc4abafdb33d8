"""A speech agent (the Realtime API, against its local fake) holds a stream.

The caller's audio goes to the model untouched (G.711 mu-law both ways); the
model's audio is played as it comes; a barge-in stops it at once, cancels the
response and truncates the model's item to what the caller heard.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from channels.db import database_sync_to_async

from voicecall.models import CallEvent, TranscriptSegment

from . import streams
from .streams import live_stream, mark, wait_for
from .support import mediastream_settings
from .vendors_agent import FakeRealtime, Speak

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

KEY = "sk-test-key"
LOCMEM_OFF = {"BACKEND": "mediastream.transcription.locmem.LocmemBackend", "OPTIONS": {}}
ANSWER = bytes(range(1, 161)) * 50  # 1 s of recognisable mu-law


def realtime(server: FakeRealtime) -> dict:
    return {
        "BACKEND": "mediastream.agents.openai.RealtimeAgent",
        "OPTIONS": {"API_KEY": KEY, "BASE_URL": f"ws://127.0.0.1:{server.port}/v1/realtime"},
    }


def _events(call, type_):
    return list(CallEvent.objects.filter(call=call, type=type_).order_by("id").values_list("payload", flat=True))


async def test_the_model_hears_the_caller_and_speaks_on_the_stream():
    async with FakeRealtime(api_key=KEY, plans=[Speak("Hello there.", ANSWER)]) as server:
        with mediastream_settings(AGENT=realtime(server), TRANSCRIPTION=LOCMEM_OFF, VAD={"ENABLED": False}):
            async with live_stream() as (comm, call, stream_sid):
                await server.wait_for(lambda: bool(server.connections) and bool(server.connection.of_type("session.update")))
                frame = bytes([0x55]) * 160
                await comm.send_to(text_data=streams.media(stream_sid, payload=frame))
                await server.wait_for(lambda: frame in server.audio(server.connection))
                await server.caller_turn("What are your hours?")
                audio = b""
                while len(audio) < len(ANSWER):
                    message = json.loads((await comm.receive_output(5))["text"])
                    if message["event"] == "media":
                        audio += base64.b64decode(message["media"]["payload"])
                    elif message["event"] == "mark":
                        await comm.send_to(text_data=mark(stream_sid, message["mark"]["name"]))
                assert audio[: len(ANSWER)] == ANSWER  # the model's bytes, untouched
                caller = await wait_for(
                    lambda: TranscriptSegment.objects.filter(call=call, speaker="caller").first(), timeout=5
                )
                assert caller.text == "What are your hours?"
                await wait_for(lambda: _events(call, "agent.first_audio"))


async def test_barge_in_stops_the_model_and_truncates_its_item_to_what_was_heard():
    hold = asyncio.Event()
    async with FakeRealtime(api_key=KEY, hold=hold, plans=[Speak("A long answer.", ANSWER * 4)]) as server:
        with mediastream_settings(AGENT=realtime(server), TRANSCRIPTION=LOCMEM_OFF, VAD={"ENABLED": False}):
            async with live_stream() as (comm, call, stream_sid):
                await server.wait_for(lambda: bool(server.connections) and bool(server.connection.of_type("session.update")))
                await server.caller_turn("Tell me everything")
                while json.loads((await comm.receive_output(5))["text"])["event"] != "media":
                    pass  # the response started playing
                await server.speech_started()  # the model's VAD hears the caller talk over it
                while True:
                    message = json.loads((await comm.receive_output(5))["text"])
                    if message["event"] == "clear":
                        break
                conn = server.connection
                await server.wait_for(lambda: bool(conn.of_type("conversation.item.truncate")), timeout=5)
                [truncate] = conn.of_type("conversation.item.truncate")
                assert conn.of_type("response.cancel")
                # What went out minus what the lead kept buffered at Twilio: well under what the model sent.
                assert 0 <= truncate["audio_end_ms"] < 4000
                cancelled = await wait_for(lambda: _events(call, "agent.reply.cancelled"))
                assert cancelled[0]["reason"] == "caller spoke again"
                hold.set()
