"""Text agents: one contract every agent honours, then what each agent does of its own.

:class:`TextAgentContract` holds what the conversation engine relies on. Each
agent has a subclass that provides the fixtures ``agent`` (a working agent
with a ``lookup_order`` tool), ``long_reply`` (``(agent, messages)`` whose
reply streams many pieces) with ``reply_work_stopped`` (awaits proof that
closing the reply stopped the agent's work), and, when it has a vendor that
can fail, ``failing_agent``. ScriptedAgent runs as it is, ChatCompletionsAgent
against the local fake in ``tests/vendors_agent``.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_asyncio
from django.core.exceptions import ImproperlyConfigured

from mediastream.agents.base import AgentError, BaseAgent, CallContext, ChatMessage, TextDelta, ToolCallRequest
from mediastream.agents.openai import ChatCompletionsAgent, chat_messages
from mediastream.agents.scripted import ScriptedAgent
from mediastream.backends import InvalidBackendError, backends, load_backend
from tests.support import mediastream_settings
from tests.vendors_agent import FakeChatCompletions, Reply, ToolCallPlan

CALL = CallContext(call_sid="CA" + "2" * 32, stream_sid="MZ2", turn_id=1)
KEY = "sk-test-key-0123456789"
LOOKUP = "tests.test_agent_backends.lookup_order"


def lookup_order(order_id: str) -> dict:
    """Look up an order by its number.

    Args:
        order_id: The order number the caller read out.
    """
    return {"order_id": order_id, "status": "shipped"}


def user(text: str = "", dtmf: str = "") -> ChatMessage:
    return ChatMessage("user", text, dtmf=dtmf)


async def collect(agent, messages):
    return [event async for event in agent.reply(messages, tools=agent.tools, call=CALL)]


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def tool_requests(events) -> list[ToolCallRequest]:
    return [e for e in events if isinstance(e, ToolCallRequest)]


async def run_tools(agent, messages, events) -> list[ChatMessage]:
    """What the engine does with a reply's tool calls: run them, record both steps."""
    requests = tool_requests(events)
    out = [*messages, ChatMessage("assistant", text_of(events), tool_calls=tuple(r.call for r in requests))]
    box = agent.toolbox()
    for request in requests:
        result = await box.run(request.call, CALL)
        out.append(ChatMessage("tool", result.output, tool_call_id=request.call.id, name=request.call.name))
    return out


# --- the contract ----------------------------------------------------------------------------------------


class TextAgentContract:
    """What the conversation engine relies on from every text agent; subclassed once per agent."""

    @pytest.fixture
    def failing_agent(self):
        pytest.skip(f"{type(self).__name__} has no vendor that can fail")

    async def test_is_a_base_agent_with_its_tools_loaded(self, agent):
        assert isinstance(agent, BaseAgent)
        assert [tool.name for tool in agent.tools] == ["lookup_order"]
        assert agent.toolbox().timeout == agent.tool_timeout > 0

    async def test_streams_the_reply_as_text_deltas(self, agent):
        events = await collect(agent, [user("Hello there")])
        deltas = [e for e in events if isinstance(e, TextDelta)]
        assert len(deltas) > 1 and all(d.text for d in deltas)  # token by token, not one block
        assert text_of(events).strip() and not tool_requests(events)

    async def test_a_keypress_gets_an_answer(self, agent):
        assert text_of(await collect(agent, [user(dtmf="1")])).strip()

    async def test_asks_for_a_tool_and_continues_after_its_result(self, agent):
        messages = [user("Where is my order A-17?")]
        events = await collect(agent, messages)
        [request] = tool_requests(events)
        assert request.call.name == "lookup_order" and request.call.arguments == {"order_id": "A-17"}
        assert request.call.id
        follow_up = await collect(agent, await run_tools(agent, messages, events))
        assert "shipped" in text_of(follow_up) and not tool_requests(follow_up)

    async def test_a_vendor_failure_is_an_agent_error(self, failing_agent):
        with pytest.raises(AgentError) as caught:
            await collect(failing_agent, [user("Hello")])
        assert str(caught.value)  # the message says why: it is shown in the call's events

    async def test_closing_a_reply_mid_stream_stops_the_work(self, long_reply, reply_work_stopped):
        agent, messages = long_reply
        stream = agent.reply(messages, tools=agent.tools, call=CALL)
        assert isinstance(await anext(stream), TextDelta)
        await stream.aclose()  # the caller spoke again: the engine fences the turn off
        await reply_work_stopped()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert text_of(await collect(agent, [user("Still there?")])).strip()

    async def test_two_calls_reply_at_the_same_time(self, agent):
        first, second = await asyncio.gather(collect(agent, [user("one")]), collect(agent, [user("two")]))
        assert text_of(first).strip() and text_of(second).strip()

    async def test_close_is_idempotent_and_the_agent_stays_usable(self, agent):
        agent.close()
        agent.close()
        assert text_of(await collect(agent, [user("Hello")])).strip()
        await agent.aclose()
        await agent.aclose()
        assert text_of(await collect(agent, [user("Hello again")])).strip()


# --- ScriptedAgent ---------------------------------------------------------------------------------------

ORDER_SCRIPT = {
    "GREETING": "Hello, this is the order line.",
    "INTENTS": [
        {
            "pattern": r"order (?P<order_id>[A-Z]-\d+)",
            "before": "Let me look.",
            "tool": {"name": "lookup_order", "arguments": {"order_id": "{order_id}"}},
            "reply": "Order {order_id} is {status}.",
            "error_reply": "I could not find it: {error}",
        },
        {"keywords": ["hello", "hi", "one", "two", "still there"], "reply": "Hello, how can I help you today?"},
    ],
    "DTMF": {"1": "You pressed one: our opening hours are nine to five."},
    "FALLBACK": "Sorry, say that again?",
    "TOOLS": [LOOKUP],
}


class TestScriptedAgent(TextAgentContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def agent(self):
        return ScriptedAgent(**ORDER_SCRIPT)

    @pytest.fixture
    def long_reply(self):
        agent = ScriptedAgent(
            **{**ORDER_SCRIPT, "INTENTS": [{"keywords": ["story"], "reply": "word " * 500}, *ORDER_SCRIPT["INTENTS"]]},
            CHARS_PER_SECOND=1000,
        )
        return agent, [user("Tell me a story")]

    @pytest.fixture
    def reply_work_stopped(self):
        async def stopped():
            pass  # no vendor: a closed generator does nothing more (proved by StopAsyncIteration)

        return stopped

    async def test_the_demo_books_a_table_with_number_words(self):
        agent = ScriptedAgent(SCRIPT="mediastream.agents.demo")
        assert agent.greeting.startswith("Hello, thanks for calling Luigi's")
        messages = [user("Hi, could I book a table for four at 7 pm?")]
        events = await collect(agent, messages)
        assert text_of(events) == "Let me check that for you."
        [request] = tool_requests(events)
        assert (request.call.name, request.call.arguments) == ("book_table", {"party_size": "4", "time": "7 pm"})
        after = text_of(await collect(agent, await run_tools(agent, messages, events)))
        assert after.startswith("Your table for 4 is booked for 7 pm. Your reference is ")

    async def test_the_demo_says_why_a_booking_failed(self):
        agent = ScriptedAgent(SCRIPT="mediastream.agents.demo")
        messages = [user("book a table for twenty at 8:30")]
        events = await collect(agent, messages)
        after = text_of(await collect(agent, await run_tools(agent, messages, events)))
        assert after == "Sorry, I could not book that: we take bookings for 1 to 12 people, not 20."

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            (user("What are your opening hours?"), "We are open from noon to ten p.m., Tuesday to Sunday."),
            (user(dtmf="1"), "We are open from noon to ten p.m., Tuesday to Sunday."),
            (user("I want a reservation"), "I can book a table. How many people, and at what time?"),
            (user("Do you sell shoes?"), "Sorry, I can tell you our opening hours or book a table."),
            (user(dtmf="9"), "Sorry, I can tell you our opening hours or book a table."),
        ],
    )
    async def test_the_demo_answers_questions_and_keys(self, message, expected):
        assert text_of(await collect(ScriptedAgent(SCRIPT="mediastream.agents.demo"), [message])).startswith(expected)

    async def test_goodbye_says_goodbye_then_ends_the_call(self):
        agent = ScriptedAgent(SCRIPT="mediastream.agents.demo")
        messages = [user("That's all, goodbye")]
        events = await collect(agent, messages)
        assert text_of(events) == "Thanks for calling Luigi's. Goodbye!"
        [request] = tool_requests(events)
        result = await agent.toolbox().run(request.call, CALL)
        assert request.call.name == "end_call" and result.ends_call
        assert await collect(agent, await run_tools(agent, messages, events)) == []

    async def test_a_key_can_run_a_tool(self):
        agent = ScriptedAgent(
            **{**ORDER_SCRIPT, "DTMF": {"7": {"tool": {"name": "lookup_order", "arguments": {"order_id": "Z-7"}}, "reply": "Order {order_id}: {status}."}}}
        )
        messages = [user(dtmf="7")]
        events = await collect(agent, messages)
        assert text_of(events) == ""
        assert text_of(await collect(agent, await run_tools(agent, messages, events))) == "Order Z-7: shipped."

    async def test_options_override_the_script_module(self):
        agent = ScriptedAgent(SCRIPT="mediastream.agents.demo", GREETING="Ciao!", FALLBACK="Come?")
        assert agent.greeting == "Ciao!"
        assert text_of(await collect(agent, [user("Do you sell shoes?")])) == "Come?"
        assert text_of(await collect(agent, [user(dtmf="1")])).startswith("We are open")  # the rest is the script's

    async def test_a_follow_up_needs_only_the_conversation(self):
        """The intent travels in the tool call's id: a new agent (another process) continues the turn."""
        messages = [user("Where is order B-2?")]
        events = await collect(ScriptedAgent(**ORDER_SCRIPT), messages)
        history = await run_tools(ScriptedAgent(**ORDER_SCRIPT), messages, events)
        assert text_of(await collect(ScriptedAgent(**ORDER_SCRIPT), history)) == "Order B-2 is shipped."

    async def test_delay_ms_holds_the_first_word(self):
        agent = ScriptedAgent(**ORDER_SCRIPT, DELAY_MS=80)
        started = time.monotonic()
        stream = agent.reply([user("hello")], tools=agent.tools, call=CALL)
        await anext(stream)
        assert time.monotonic() - started >= 0.08
        await stream.aclose()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"INTENTS": [{"keywords": ["x"], "tool": {"name": "missing"}}]}, r"INTENTS\[0\] names the tool 'missing', which is not in TOOLS"),
            ({"INTENTS": [{"pattern": "(", "reply": "x"}]}, r"INTENTS\[0\]: pattern '\(' is not a regular expression"),
            ({"INTENTS": [{"keywords": ["x"], "pattern": "x", "reply": "x"}]}, r"INTENTS\[0\] needs exactly one of keywords or pattern"),
            ({"INTENTS": [{"keywords": ["x"], "replies": "x"}]}, r"INTENTS\[0\] has unknown keys \['replies'\]"),
            ({"DTMF": {"1": {}}}, r"DTMF\['1'\] needs a reply or a tool"),
            ({"SCRIPT": "no.such.script"}, "SCRIPT 'no.such.script' cannot be imported"),
            ({"DELAY_MS": -1}, "DELAY_MS must be"),
            ({"TOOLS": ["no.such.tool"]}, r'Could not import the tool .*MEDIASTREAM\["AGENT"\]\["OPTIONS"\]\["TOOLS"\]\[0\]'),
        ],
    )
    async def test_a_bad_script_fails_when_the_agent_is_built(self, options, message):
        with pytest.raises((InvalidBackendError, ImproperlyConfigured), match=message):
            load_backend("AGENT", {"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": options}, BaseAgent)

    async def test_backends_agent_builds_it_from_the_setting(self):
        assert backends.agent is None  # unset: no agent
        config = {"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"SCRIPT": "mediastream.agents.demo"}}
        with mediastream_settings(AGENT=config):
            agent = backends.agent
            assert isinstance(agent, ScriptedAgent) and backends.agent is agent
        assert backends.agent is None


def story_model(body: dict) -> Reply:
    """A long story when asked for one (many tokens), a short answer otherwise."""
    if "story" in body["messages"][-1].get("content", ""):
        return Reply(text="word " * 500)
    return Reply(text="Yes, still here.")


# --- ChatCompletionsAgent ---------------------------------------------------------------------------------


def order_model(body: dict) -> Reply:
    """A model that looks orders up with the tool, then reads the result back."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        result = json.loads(last["content"])
        return Reply(text=f"Your order {result['order_id']} has {result['status']}.")
    if "order" in (last.get("content") or ""):
        return Reply(text="One moment.", tool_calls=(ToolCallPlan("lookup_order", {"order_id": "A-17"}),))
    return Reply(text=f"You said: {last.get('content')}. How can I help?")


class TestChatCompletionsAgent(TextAgentContract):
    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def server(self):
        async with FakeChatCompletions(api_key=KEY, respond=order_model) as server:
            yield server

    @pytest_asyncio.fixture
    async def agent(self, server):
        agent = ChatCompletionsAgent(API_KEY=KEY, BASE_URL=server.base_url, MODEL="gpt-test", TOOLS=[LOOKUP])
        yield agent
        await agent.aclose()

    @pytest_asyncio.fixture
    async def failing_agent(self, server):
        agent = ChatCompletionsAgent(API_KEY="sk-wrong-key-9876543210", BASE_URL=server.base_url)
        yield agent
        await agent.aclose()

    @pytest_asyncio.fixture
    async def slow_server(self):
        async with FakeChatCompletions(api_key=KEY, respond=story_model, token_delay=0.005) as server:
            yield server

    @pytest_asyncio.fixture
    async def long_reply(self, slow_server):
        agent = ChatCompletionsAgent(API_KEY=KEY, BASE_URL=slow_server.base_url, TOOLS=[LOOKUP])
        yield agent, [user("Tell me a story")]
        await agent.aclose()

    @pytest.fixture
    def reply_work_stopped(self, slow_server):
        async def stopped():
            await slow_server.wait_aborted()  # the server saw the client go: it stops generating
            assert slow_server.completed == 0

        return stopped

    async def test_the_request_is_what_chat_completions_documents(self, server):
        agent = ChatCompletionsAgent(
            API_KEY=KEY, BASE_URL=server.base_url, MODEL="gpt-test", INSTRUCTIONS="Be brief.", TOOLS=[LOOKUP], TEMPERATURE=0.3
        )
        messages = [user("Where is my order?")]
        events = await collect(agent, messages)
        await collect(agent, [*await run_tools(agent, messages, events), user(dtmf="5")])
        first, second = (r.json for r in server.requests)
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
        assert server.requests[0].path == "/v1/chat/completions"
        assert first["model"] == "gpt-test" and first["stream"] is True and first["temperature"] == 0.3
        assert first["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my order?"}]
        assert first["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "lookup_order",
                    "description": "Look up an order by its number.",
                    "parameters": {
                        "type": "object",
                        "properties": {"order_id": {"type": "string", "description": "The order number the caller read out."}},
                        "required": ["order_id"],
                    },
                },
            }
        ]
        [request] = tool_requests(events)
        assert second["messages"][2:] == [
            {
                "role": "assistant",
                "content": "One moment.",
                "tool_calls": [
                    {"id": request.call.id, "type": "function", "function": {"name": "lookup_order", "arguments": '{"order_id": "A-17"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": request.call.id, "content": '{"order_id": "A-17", "status": "shipped"}'},
            {"role": "user", "content": "The caller pressed 5 on the keypad."},
        ]
        await agent.aclose()

    async def test_tool_call_pieces_are_joined_by_index_across_chunks(self):
        plans = (
            ToolCallPlan("lookup_order", {"order_id": "A-1"}, id="call_a"),
            ToolCallPlan("lookup_order", {"order_id": "B-22222222222222"}, id="call_b"),
        )
        async with FakeChatCompletions(api_key=None, respond=lambda body: Reply(tool_calls=plans)) as server:
            agent = ChatCompletionsAgent(BASE_URL=server.base_url, TOOLS=[LOOKUP])  # a local server needs no key
            events = await collect(agent, [user("two orders")])
            await agent.aclose()
        assert "authorization" not in server.requests[0].headers
        assert [(r.call.id, r.call.arguments) for r in tool_requests(events)] == [
            ("call_a", {"order_id": "A-1"}),
            ("call_b", {"order_id": "B-22222222222222"}),
        ]
        assert text_of(events) == ""

    @pytest.mark.parametrize(
        ("reply", "message"),
        [
            (Reply(status=429, error_message="Rate limit reached for gpt-test", error_code="rate_limit_exceeded"), "HTTP 429: Rate limit reached for gpt-test (rate_limit_exceeded)"),
            (Reply(status=500, error_message="The server had an error"), "HTTP 500: The server had an error"),
            (Reply(status=400, error_message=f"bad key {KEY} here"), "HTTP 400: bad key *** here"),
            (Reply(text="Half a sen", error_midstream=True, error_message="overloaded"), "Chat Completions error: overloaded"),
        ],
    )
    async def test_vendor_errors_are_agent_errors_without_the_key(self, reply, message):
        async with FakeChatCompletions(api_key=KEY, respond=lambda body: reply) as server:
            agent = ChatCompletionsAgent(API_KEY=KEY, BASE_URL=server.base_url)
            with pytest.raises(AgentError) as caught:
                await collect(agent, [user("Hello")])
            await agent.aclose()
        assert message in str(caught.value) and KEY not in str(caught.value)

    async def test_a_wrong_key_is_a_401_agent_error(self, failing_agent):
        with pytest.raises(AgentError, match=r"HTTP 401: Incorrect API key provided: sk-\*\*\*\*3210"):
            await collect(failing_agent, [user("Hello")])

    async def test_a_silent_server_times_out(self):
        async with FakeChatCompletions(api_key=KEY, hold=asyncio.Event()) as server:
            agent = ChatCompletionsAgent(API_KEY=KEY, BASE_URL=server.base_url, REQUEST_TIMEOUT=0.2)
            with pytest.raises(AgentError, match=r"timed out \(ReadTimeout, limit 0.2s\)"):
                await collect(agent, [user("Hello")])
            await agent.aclose()

    async def test_an_unreachable_server_is_an_agent_error(self):
        from tests.live import free_port

        agent = ChatCompletionsAgent(API_KEY=KEY, BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
        with pytest.raises(AgentError, match="request failed: ConnectError"):
            await collect(agent, [user("Hello")])
        await agent.aclose()

    async def test_openai_needs_a_key_and_other_servers_do_not(self, monkeypatch):
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        with pytest.raises(ImproperlyConfigured, match=r'MEDIASTREAM\["AGENT"\]\["OPTIONS"\]\["API_KEY"\]'):
            ChatCompletionsAgent()
        assert ChatCompletionsAgent(BASE_URL="http://127.0.0.1:11434/v1").api_key == ""
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        assert ChatCompletionsAgent().api_key == "sk-from-env"


def test_keypresses_are_said_in_words_and_the_system_prompt_comes_first():
    messages = chat_messages([user(dtmf="#"), ChatMessage("assistant", "Yes?")], instructions="Be kind.")
    assert messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "The caller pressed # on the keypad."},
        {"role": "assistant", "content": "Yes?"},
    ]
