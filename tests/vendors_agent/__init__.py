"""Local stand-ins for the agent vendors, for tests, benchmarks and the simulator.

* :class:`~.chat.FakeChatCompletions`: ``POST /v1/chat/completions`` streaming
  server-sent events with text and tool-call deltas (aiohttp, like ``tests/vendors``);
* :class:`~.realtime.FakeRealtime`: the Realtime WebSocket event protocol
  (like ``tests/vendors_stt``).

Both listen on 127.0.0.1 on a free port and record what the client sent::

    async with FakeChatCompletions(respond=lambda body: Reply(text="Hi there.")) as server:
        agent = ChatCompletionsAgent(API_KEY="sk-test-key", BASE_URL=server.base_url)
"""

from .chat import FakeChatCompletions, Reply, ToolCallPlan
from .realtime import DEFAULT_PLAN, CallTool, FakeRealtime, Speak

__all__ = ["CallTool", "DEFAULT_PLAN", "FakeChatCompletions", "FakeRealtime", "Reply", "Speak", "ToolCallPlan"]
