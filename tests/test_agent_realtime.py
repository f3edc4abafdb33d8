"""The Realtime speech agent against a local fake of the OpenAI Realtime WebSocket protocol."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from django.core.exceptions import ImproperlyConfigured

from mediastream.agents.base import (
    AgentError,
    AudioDelta,
    BaseSpeechAgent,
    CallContext,
    CallerSpeechStarted,
    ChatMessage,
    ResponseDone,
    SpeechError,
    ToolCallRequest,
    Transcript,
)
from mediastream.agents.openai import RealtimeAgent
from mediastream.agents.openai_realtime import MAX_APPEND_BYTES
from mediastream.backends import load_backend
from tests.vendors_agent import CallTool, FakeRealtime, Speak

pytestmark = pytest.mark.asyncio

KEY = "sk-test-key"
CALL = CallContext(call_sid="CA" + "3" * 32, stream_sid="MZ3", turn_id=0)
LOOKUP = "tests.test_agent_backends.lookup_order"
REPLY_AUDIO = bytes(range(256)) * 5  # mu-law bytes, recognisable one by one


def agent_for(server: FakeRealtime, **options) -> RealtimeAgent:
    return RealtimeAgent(API_KEY=KEY, BASE_URL=f"ws://127.0.0.1:{server.port}/v1/realtime", **options)


async def next_of(events, kind, limit: int = 200):
    """The next event of ``kind`` (others before it are returned too)."""
    seen = []
    async with asyncio.timeout(5):
        while len(seen) < limit:
            event = await anext(events)
            seen.append(event)
            if isinstance(event, kind):
                return event, seen
    raise AssertionError(f"no {kind.__name__} in {seen}")


@pytest_asyncio.fixture
async def server():
    async with FakeRealtime(api_key=KEY, plans=[Speak("Hello, how can I help?", REPLY_AUDIO)]) as server:
        yield server


@pytest_asyncio.fixture
async def session(server):
    session = agent_for(server, INSTRUCTIONS="Be brief.", TOOLS=[LOOKUP]).open_session(call=CALL)
    await session.connect()
    yield session
    await session.close()


async def test_the_session_asks_for_pcmu_both_ways_with_server_vad_and_the_tools(server, session):
    conn = server.connection
    assert conn.path == "/v1/realtime" and conn.query == {"model": "gpt-realtime"}
    assert conn.headers["authorization"] == f"Bearer {KEY}"
    [update] = conn.of_type("session.update")
    config = update["session"]
    assert config["type"] == "realtime" and config["instructions"] == "Be brief."
    assert config["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert config["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "alloy"}
    assert config["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert config["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert config["tools"] == [
        {
            "type": "function",
            "name": "lookup_order",
            "description": "Look up an order by its number.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "The order number the caller read out."}},
                "required": ["order_id"],
            },
        }
    ]
    assert not conn.of_type("response.create")  # no greeting configured: the caller speaks first


async def test_caller_audio_goes_up_untouched_and_coalesced(server, session):
    frames = [bytes([n]) * 160 for n in range(50)]  # one second of 20 ms Twilio frames
    for frame in frames:
        session.send_audio(frame)
    conn = server.connection
    await server.wait_for(lambda: len(server.audio(conn)) == 8000)
    assert server.audio(conn) == b"".join(frames)
    appends = conn.of_type("input_audio_buffer.append")
    assert len(appends) < len(frames) and all(len(m["audio"]) <= MAX_APPEND_BYTES * 4 / 3 + 4 for m in appends)


async def test_a_caller_turn_comes_back_as_speech_start_transcripts_and_pcmu_audio(server, session):
    events = session.events()
    item = await server.caller_turn("Where is my order?")
    started, _ = await next_of(events, CallerSpeechStarted)
    assert started.item_id == item and started.audio_start_ms == 0
    heard, seen = await next_of(events, ResponseDone)
    caller = [e for e in seen if isinstance(e, Transcript) and e.role == "user"]
    assert caller[-1] == Transcript("user", "Where is my order?", True, item) and not caller[0].final
    audio = [e for e in seen if isinstance(e, AudioDelta)]
    assert b"".join(e.mulaw for e in audio) == REPLY_AUDIO  # the model's G.711 bytes, as they came
    assert {e.item_id for e in audio} == {heard.item_id} and heard.status == "completed"
    agent_text = [e for e in seen if isinstance(e, Transcript) and e.role == "assistant"]
    assert agent_text[-1].text == "Hello, how can I help?" and agent_text[-1].final


async def test_a_tool_call_round_trip(server):
    server.plans.clear()
    server.plans.extend([CallTool("lookup_order", {"order_id": "A-17"}, call_id="call_9"), Speak("It has shipped.", b"\x01" * 640)])
    agent = agent_for(server, TOOLS=[LOOKUP])
    session = agent.open_session(call=CALL)
    await session.connect()
    events = session.events()
    await server.caller_turn("Where is order A-17?")
    request, _ = await next_of(events, ToolCallRequest)
    assert (request.call.id, request.call.name, request.call.arguments) == ("call_9", "lookup_order", {"order_id": "A-17"})
    result = await agent.toolbox().run(request.call, CALL)
    await session.send_tool_result(request.call.id, result.output)
    called, _ = await next_of(events, ResponseDone)  # the response that asked for the tool
    assert called.item_id == ""  # it spoke nothing
    spoken, seen = await next_of(events, ResponseDone)
    assert spoken.status == "completed"
    assert b"".join(e.mulaw for e in seen if isinstance(e, AudioDelta)) == b"\x01" * 640
    conn = server.connection
    [output] = conn.of_type("conversation.item.create")
    assert output["item"] == {"type": "function_call_output", "call_id": "call_9", "output": '{"order_id": "A-17", "status": "shipped"}'}
    assert conn.of_type("response.create")  # the model carries on after the result
    await session.close()


async def test_barge_in_cancels_the_response_and_truncates_to_what_was_heard(server):
    hold = asyncio.Event()
    async with FakeRealtime(api_key=KEY, hold=hold, plans=[Speak("A long answer.", b"\x02" * 3200)]) as held:
        session = agent_for(held).open_session(call=CALL)
        await session.connect()
        events = session.events()
        await held.caller_turn("Tell me everything")
        first, _ = await next_of(events, AudioDelta)
        await held.speech_started()  # the caller talks over the agent
        await next_of(events, CallerSpeechStarted)
        await session.cancel_response()
        await session.truncate(first.item_id, 180)
        done, seen = await next_of(events, ResponseDone)
        assert done.status == "cancelled" and done.item_id == first.item_id
        conn = held.connection
        await held.wait_for(lambda: bool(conn.of_type("conversation.item.truncate")))
        assert conn.of_type("response.cancel") == [{"type": "response.cancel"}]
        assert conn.of_type("conversation.item.truncate") == [
            {"type": "conversation.item.truncate", "item_id": first.item_id, "content_index": 0, "audio_end_ms": 180}
        ]
        assert sum(len(e.mulaw) for e in seen if isinstance(e, AudioDelta)) < 3200 - len(first.mulaw)
        await session.close()


async def test_cancelling_when_nothing_is_playing_is_not_an_error(server, session):
    events = session.events()
    await session.cancel_response()  # the response ended a moment before the caller spoke
    await server.caller_turn("Hello")
    first, seen = await next_of(events, CallerSpeechStarted)
    assert not [e for e in seen if isinstance(e, SpeechError)]


async def test_the_greeting_is_asked_for_on_a_new_call_and_history_replayed_on_a_restart(server):
    greeter = agent_for(server, GREETING="Welcome to Luigi's!")
    new = greeter.open_session(call=CALL)
    await new.connect()
    await server.wait_for(lambda: bool(server.connection.of_type("response.create")))
    [create] = server.connection.of_type("response.create")
    assert "Welcome to Luigi's!" in create["response"]["instructions"]
    await new.close()
    history = [ChatMessage("user", "", dtmf="2"), ChatMessage("assistant", "You pressed two."), ChatMessage("tool", "{}", tool_call_id="c1")]
    again = greeter.open_session(call=CALL, history=history)
    await again.connect()
    conn = await server.wait_connections(2)
    await server.wait_for(lambda: len(conn.of_type("conversation.item.create")) == 2)
    assert [m["item"] for m in conn.of_type("conversation.item.create")] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "The caller pressed 2 on the keypad."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "You pressed two."}]},
    ]
    assert not conn.of_type("response.create")  # no second greeting
    await again.close()


async def test_the_beta_protocol_is_spoken_too():
    async with FakeRealtime(api_key=KEY, protocol="beta", plans=[Speak("Hi.", b"\x03" * 480)]) as server:
        session = agent_for(server, PROTOCOL="beta").open_session(call=CALL)
        await session.connect()
        config = server.connection.of_type("session.update")[0]["session"]
        assert config["input_audio_format"] == config["output_audio_format"] == "g711_ulaw"
        assert server.connection.headers["openai-beta"] == "realtime=v1"
        events = session.events()
        await server.caller_turn("Hello")
        done, seen = await next_of(events, ResponseDone)
        assert b"".join(e.mulaw for e in seen if isinstance(e, AudioDelta)) == b"\x03" * 480
        await session.close()


@pytest.mark.parametrize(
    ("server_options", "agent_options", "message"),
    [
        ({"api_key": "sk-other"}, {}, r"rejected the session: Incorrect API key provided. \(invalid_api_key\)"),
        ({"refuse_status": 401}, {}, "refused the connection: HTTP 401"),
        ({"stall_handshake": True}, {"CONNECT_TIMEOUT": 0.3}, "did not configure the session within 0.3s"),
        ({"protocol": "beta"}, {}, r"rejected the session: This endpoint serves the beta protocol"),
    ],
)
async def test_a_failed_connect_is_an_agent_error_without_the_key(server_options, agent_options, message):
    async with FakeRealtime(**server_options) as server:
        session = agent_for(server, **agent_options).open_session(call=CALL)
        with pytest.raises(AgentError, match=message) as caught:
            await session.connect()
        assert KEY not in str(caught.value)
        await session.close()


async def test_a_lost_connection_ends_the_events_with_a_fatal_error(server, session):
    events = session.events()
    await server.drop()
    error, _ = await next_of(events, SpeechError)
    assert error.fatal and "connection lost" in error.message
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    with pytest.raises(AgentError, match="OpenAI Realtime connection closed"):
        await session.cancel_response()  # the engine hears why, it is never a hang


async def test_close_is_idempotent_and_ends_the_events(server, session):
    events = session.events()
    await session.close()
    await session.close()
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    session.send_audio(b"\xff" * 160)  # after close: ignored, never raises
    await server.wait_for(lambda: server.connection.closed)


async def test_it_is_a_speech_agent_built_from_the_setting(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    agent = load_backend(
        "AGENT",
        {"BACKEND": "mediastream.agents.openai.RealtimeAgent", "OPTIONS": {"API_KEY": KEY, "VOICE": "verse", "TOOLS": [LOOKUP]}},
        BaseSpeechAgent,
    )
    assert isinstance(agent, BaseSpeechAgent) and agent.voice == "verse" and [t.name for t in agent.tools] == ["lookup_order"]
    with pytest.raises(ImproperlyConfigured, match="RealtimeAgent needs an API key"):
        RealtimeAgent()
    assert json.dumps(agent.session_config(agent.tools))  # JSON all the way down
