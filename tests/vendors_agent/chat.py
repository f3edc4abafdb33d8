"""A local Chat Completions endpoint: ``POST /v1/chat/completions`` with ``"stream": true``, as documented.

Answers with server-sent events, one ``chat.completion.chunk`` per token,
then ``data: [DONE]``. A tool call is streamed the way OpenAI streams it:
the first piece carries ``index``, ``id``, ``type`` and ``function.name``
with empty arguments, the following pieces carry more of
``function.arguments`` (split mid-JSON), and the choice ends with
``finish_reason: "tool_calls"``. Errors come in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``): a wrong bearer token
is 401, and :class:`Reply` can ask for any status (429, 500, ...).

What each request gets is decided by ``respond(body) -> Reply`` (default:
echo the caller's last words, or report a tool result). ``first_token_delay``
and ``token_delay`` (seconds) make a slow model; ``hold`` (an event) keeps
every stream before its first token until it is set (always on exit);
``aborted`` counts streams the client closed before the end, and
``wait_aborted()`` waits for one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.vendors.server import FakeVendorServer

__all__ = ["FakeChatCompletions", "Reply", "ToolCallPlan"]


@dataclass(frozen=True)
class ToolCallPlan:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass(frozen=True)
class Reply:
    """One answer: text tokens, then tool calls; or an HTTP error (``status`` >= 400)."""

    text: str = ""
    tool_calls: tuple[ToolCallPlan, ...] = ()
    status: int = 200
    error_message: str = ""
    error_code: str | None = None
    #: Sent as a ``data: {"error": ...}`` event after the text (some servers fail mid-stream).
    error_midstream: bool = False


def echo(body: dict[str, Any]) -> Reply:
    """The default model: repeats the caller, or reads a tool result back."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply(text=f"The tool said {last['content']}.")
    return Reply(text=f"You said: {last.get('content') or ''}")


def tokens(text: str) -> list[str]:
    """Word-sized tokens, spaces attached in front like a tokenizer does."""
    return re.findall(r"\s*\S+", text)


class FakeChatCompletions(FakeVendorServer):
    """``base_url`` is ``http://127.0.0.1:<port>/v1``, ready for ``ChatCompletionsAgent(BASE_URL=...)``."""

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test-key",
        respond: Callable[[dict[str, Any]], Reply] = echo,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.api_key = api_key
        self.respond = respond
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        #: Streams the client closed before the last event.
        self.aborted = 0
        #: Streams sent to the end.
        self.completed = 0
        self._aborted_event: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._completions)]

    async def wait_aborted(self, timeout: float = 5.0) -> None:
        if self._aborted_event is None:
            self._aborted_event = asyncio.Event()
        if self.aborted:
            return
        async with asyncio.timeout(timeout):
            await self._aborted_event.wait()

    # --- the endpoint -----------------------------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
            if token != self.api_key:
                shown = f"{token[:3]}****{token[-4:]}" if len(token) > 8 else "****"
                return _error(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        problem = _invalid(body)
        if problem:
            return _error(400, problem)
        reply = self.respond(body)
        if reply.status >= 400:
            kind = {429: "rate_limit_exceeded"}.get(reply.status, "server_error" if reply.status >= 500 else "invalid_request_error")
            return _error(reply.status, reply.error_message or f"HTTP {reply.status}", type_=kind, code=reply.error_code)
        return await self._stream(request, body, reply)

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        chunk_id = f"chatcmpl-{int(time.time() * 1000)}"
        events = list(self._chunks(body["model"], chunk_id, reply))
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.first_token_delay:
                await asyncio.sleep(self.first_token_delay)
            for index, event in enumerate(events):
                if index and self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("the client closed the stream")
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except asyncio.CancelledError:
            self._note_aborted()
            raise
        except ConnectionError:
            self._note_aborted()
            return response
        self.completed += 1
        return response

    def _note_aborted(self) -> None:
        self.aborted += 1
        if self._aborted_event is None:
            self._aborted_event = asyncio.Event()
        self._aborted_event.set()

    def _chunks(self, model: str, chunk_id: str, reply: Reply):
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        yield chunk({"role": "assistant", "content": ""})
        for token in tokens(reply.text):
            yield chunk({"content": token})
        if reply.error_midstream:
            yield {"error": {"message": reply.error_message or "The server had an error", "type": "server_error", "code": None}}
            return
        for index, plan in enumerate(reply.tool_calls):
            arguments = json.dumps(plan.arguments)
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": plan.id or f"call_{index}_{chunk_id[-6:]}",
                            "type": "function",
                            "function": {"name": plan.name, "arguments": ""},
                        }
                    ]
                }
            )
            third = max(1, len(arguments) // 3)
            for start in range(0, len(arguments), third):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[start : start + third]}}]})
        yield chunk({}, "tool_calls" if reply.tool_calls else "stop")


def _invalid(body: Any) -> str:
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    called: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant", "tool", "developer"):
            return f"Invalid value for 'messages[{index}].role'"
        if role == "tool" and message.get("tool_call_id") not in called:
            return (
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                f"message with 'tool_calls' (messages[{index}])."
            )
        for tool_call in message.get("tool_calls") or ():
            called.add(tool_call.get("id"))
        if role == "assistant" and message.get("content") is None and not message.get("tool_calls"):
            return f"Missing content in 'messages[{index}]'."
    for index, tool in enumerate(body.get("tools") or []):
        if tool.get("type") != "function" or not isinstance(tool.get("function", {}).get("name"), str):
            return f"Invalid value for 'tools[{index}]'"
    if body.get("stream") is not True:
        return "this fake serves streaming requests only"
    return ""


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param=None, code=None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status)
