"""A speech agent behind the relay: the Realtime API (its local fake) hears and speaks PCM16 24 kHz.

daphne runs ``RealtimeAgent`` against a fake served by this test process on a
port fixed for the module; each test starts the fake there and plays the
model's part.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import serve

from .live import free_port
from .talk_client import RelayClient, RelayRefused, decoded_audio, relay_server, session_cookie
from .vendors_agent import CallTool, FakeRealtime, Speak

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

KEY = "sk-test-key"
PCM24 = {"type": "audio/pcm", "rate": 24000}
#: 0.5 s of a 440 Hz tone as PCM16 24 kHz: the model's "speech".
TONE = (np.sin(2 * np.pi * 440 * np.arange(12000) / 24000) * 8000).astype("<i2").tobytes()
CLIENT_TOOL = {
    "name": "get_screen_size",
    "description": "The size of the user's screen.",
    "parameters": {"type": "object", "properties": {"unit": {"type": "string"}}},
    "client": True,
}


class FakeRealtimePCM(FakeRealtime):
    """The fake Realtime endpoint, on a given port, serving PCM16 24 kHz sessions (``audio/pcm``)."""

    def __init__(self, *, port: int, **options: Any) -> None:
        super().__init__(api_key=KEY, **options)
        self.fixed_port = port

    async def __aenter__(self) -> FakeRealtimePCM:
        self._server = await serve(self._handler, "127.0.0.1", self.fixed_port, process_request=self._process_request, compression=None, ping_interval=None)
        return self

    def _invalid_session(self, session: dict[str, Any]) -> str:
        audio = session.get("audio") or {}
        formats = [audio.get(side, {}).get("format") for side in ("input", "output")]
        if formats != [PCM24, PCM24]:
            return f"this fake expects audio/pcm at 24000 both ways, got {formats}"
        return ""


@pytest.fixture(scope="module")
def fake_port():
    return free_port()


@pytest.fixture(scope="module")
def live(daphne, fake_port):
    agent = {
        "BACKEND": "mediastream.agents.openai_realtime.RealtimeAgent",
        "OPTIONS": {"API_KEY": KEY, "BASE_URL": f"ws://127.0.0.1:{fake_port}/v1/realtime", "TOOLS": [CLIENT_TOOL]},
    }
    with relay_server(daphne, {"AGENT": agent}, name="talk-realtime") as server:
        yield server


@pytest.fixture
def cookie():
    return session_cookie("staff")


async def open_session(live, cookie, fake: FakeRealtimePCM, **create: Any) -> tuple[RelayClient, str, Any]:
    client = await RelayClient.open(live, cookie)
    created = await client.create(**create)
    session = created["relaySessionId"]
    await client.wait_event(lambda e: e["type"] == "ready")
    conn = await fake.wait_connections(1)
    return client, session, (created, conn)


async def test_the_browser_hears_the_model_and_the_model_hears_the_browser_untouched(live, cookie, fake_port):
    async with FakeRealtimePCM(port=fake_port, plans=[Speak("Hello there, how can I help?", TONE)], chunk_bytes=4800) as fake:
        client, session, (created, conn) = await open_session(live, cookie, fake, voice="verse", model="gpt-realtime-mini")
        try:
            assert created["provider"] == "realtime"
            assert (created["voice"], created["model"]) == ("verse", "gpt-realtime-mini")
            [update] = conn.of_type("session.update")
            assert update["session"]["audio"]["output"]["voice"] == "verse"
            assert conn.query["model"] == "gpt-realtime-mini"
            spoken = TONE[:3840]
            await client.call("audio", {"relaySessionId": session, "audioBase64": base64.b64encode(spoken).decode()})
            await fake.wait_for(lambda: fake.audio(conn) == spoken)  # the browser's PCM16, not resampled
            await fake.caller_turn("What time is it?")
            await client.wait_event(lambda e: e["type"] == "mark")
            assert decoded_audio(client.of(session)).tobytes() == TONE  # the model's PCM16, not resampled
            user = [e for e in client.of(session, "transcript") if e["role"] == "user"]
            assert user[-1] == {"relaySessionId": session, "type": "transcript", "role": "user", "text": "What time is it?", "final": True}
            assistant = [e["text"] for e in client.of(session, "transcript") if e["role"] == "assistant" and e["final"]]
            assert assistant == ["Hello there, how can I help?"]
        finally:
            await client.close()


async def test_cancel_mid_reply_stops_the_model_clears_the_browser_and_cuts_the_item(live, cookie, fake_port):
    hold = asyncio.Event()
    async with FakeRealtimePCM(port=fake_port, plans=[Speak("A very long answer.", TONE * 8)], chunk_bytes=4800, hold=hold) as fake:
        client, session, (_, conn) = await open_session(live, cookie, fake)
        try:
            await fake.caller_turn("Tell me everything.")
            await client.wait_event(lambda e: e["type"] == "audio")  # the reply is playing (the fake holds the rest)
            assert await client.call("cancel", {"relaySessionId": session, "reason": "barge-in"}) == {"ok": True}
            clear = await client.wait_event(lambda e: e["type"] == "clear")
            cleared_at = client.events.index(clear)
            await fake.wait_for(lambda: bool(conn.of_type("response.cancel")))
            await client.wait_event(lambda e: e["type"] == "mark", after=cleared_at)  # the cancelled response ended
            assert not [e for e in client.events[cleared_at:] if e["type"] == "audio"]
            await fake.wait_for(lambda: bool(conn.of_type("conversation.item.truncate")))
            [truncate] = conn.of_type("conversation.item.truncate")
            assert 0 <= truncate["audio_end_ms"] < 200  # the browser had played at most the one 100 ms piece sent
        finally:
            await client.close()


async def test_the_models_vad_hearing_the_user_over_its_audio_clears_the_browser(live, cookie, fake_port):
    hold = asyncio.Event()
    async with FakeRealtimePCM(port=fake_port, plans=[Speak("A long answer.", TONE * 8)], chunk_bytes=24000, hold=hold) as fake:
        client, session, (_, conn) = await open_session(live, cookie, fake)
        try:
            await fake.caller_turn("Tell me a story.")
            await client.wait_event(lambda e: e["type"] == "audio")  # 0.5 s sent: still playing in the browser
            await fake.speech_started()
            await client.wait_event(lambda e: e["type"] == "clear")
            await fake.wait_for(lambda: bool(conn.of_type("response.cancel")))
        finally:
            hold.set()
            await client.close()


async def test_a_client_tool_call_goes_to_the_browser_and_its_result_back_to_the_model(live, cookie, fake_port):
    plans = [CallTool("get_screen_size", {"unit": "px"}, call_id="call_42"), Speak("Your screen is wide.", TONE)]
    async with FakeRealtimePCM(port=fake_port, plans=plans, chunk_bytes=4800) as fake:
        client, session, (_, conn) = await open_session(live, cookie, fake)
        try:
            await fake.caller_turn("How big is my screen?")
            call = await client.wait_event(lambda e: e["type"] == "toolCall")
            assert (call["callId"], call["name"], call["args"]) == ("call_42", "get_screen_size", {"unit": "px"})
            assert call["itemId"]
            # Progress first (the call keeps waiting), then the result.
            await client.call("toolResult", {"relaySessionId": session, "callId": "call_42", "result": {"status": "measuring"}, "willContinue": True})
            await client.call("toolResult", {"relaySessionId": session, "callId": "call_42", "result": {"width": 1920, "height": 1080}})
            acks = [e["callId"] for e in client.of(session, "toolResult")]
            assert acks == ["call_42", "call_42"]
            await fake.wait_for(lambda: bool(conn.of_type("conversation.item.create")))
            [output] = conn.of_type("conversation.item.create")
            assert output["item"] == {"type": "function_call_output", "call_id": "call_42", "output": '{"width": 1920, "height": 1080}'}
            await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "assistant" and e["final"])
            with pytest.raises(RelayRefused):  # answered: no longer waiting
                await client.call("toolResult", {"relaySessionId": session, "callId": "call_42", "result": {}})
        finally:
            await client.close()


async def test_a_model_that_cannot_be_reached_closes_the_session_with_an_error(live, cookie):
    # No fake listening on the module's port: the connection is refused.
    async with await RelayClient.open(live, cookie) as client:
        session = (await client.create())["relaySessionId"]
        error = await client.wait_event(lambda e: e["type"] == "error")
        assert error["message"].startswith("The relay's voice could not connect: OpenAI Realtime connection failed")
        closed = await client.wait_event(lambda e: e["type"] == "close")
        assert closed == {"relaySessionId": session, "type": "close", "reason": "error"}
        assert not client.of(session, "ready")
