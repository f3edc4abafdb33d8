"""OpenAI agents: streaming Chat Completions (text) and the Realtime API (speech to speech).

:class:`ChatCompletionsAgent` speaks ``POST {BASE_URL}/chat/completions`` with
``"stream": true``: server-sent events, one ``chat.completion.chunk`` each,
until ``data: [DONE]``. Text arrives in ``choices[0].delta.content``; a tool
call arrives in pieces in ``delta.tool_calls[i]`` (the first piece has the
``id`` and ``function.name``, later ones more of ``function.arguments``,
matched by ``index``) and is handed on once the choice finishes. Any
OpenAI-compatible server works (vLLM, Ollama, llama.cpp's server): set
``BASE_URL`` (and no ``API_KEY`` if the server needs none).

OPTIONS: ``API_KEY`` (default: the ``OPENAI_API_KEY`` environment variable;
required only for OpenAI's own URL), ``BASE_URL``
(``https://api.openai.com/v1``), ``MODEL`` (``gpt-4o-mini``),
``INSTRUCTIONS`` (the system prompt), ``GREETING``, ``TOOLS``,
``TEMPERATURE``, ``REQUEST_TIMEOUT`` (seconds for connecting and between
chunks, 30), ``TOOL_TIMEOUT``.

The connection pool belongs to the event loop that opened it (see
:mod:`mediastream.tts.http`); ``close()``/``aclose()`` drop it and the next
reply opens another. Closing a reply's iterator closes its HTTP response, so
the server stops generating.

:class:`~mediastream.agents.openai_realtime.RealtimeAgent` (importable from
here) is the speech-to-speech agent.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.core.exceptions import ImproperlyConfigured

from voicecall.logsafe import sanitize

from ..httppool import LoopBoundPool
from .base import AgentError, BaseAgent, CallContext, ChatMessage, TextDelta, ToolCall, ToolCallRequest
from .openai_realtime import RealtimeAgent
from .tools import Tool

__all__ = ["ChatCompletionsAgent", "RealtimeAgent", "chat_messages", "chat_tools"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_ERROR_CHARS = 200


class ChatCompletionsAgent(LoopBoundPool, BaseAgent):
    """Streaming Chat Completions with tool calls; one pooled HTTP client per event loop."""

    vendor = "Chat Completions"

    def __init__(
        self,
        *,
        API_KEY: str | None = None,
        BASE_URL: str = OPENAI_BASE_URL,
        MODEL: str = "gpt-4o-mini",
        INSTRUCTIONS: str = "",
        GREETING: str = "",
        TOOLS: Sequence[Any] = (),
        TEMPERATURE: float | None = None,
        REQUEST_TIMEOUT: float = 30.0,
        TOOL_TIMEOUT: float = 10.0,
    ) -> None:
        super().__init__(INSTRUCTIONS=INSTRUCTIONS, GREETING=GREETING, TOOLS=TOOLS, TOOL_TIMEOUT=TOOL_TIMEOUT)
        self.api_key = API_KEY or os.environ.get("OPENAI_API_KEY", "")
        base_url = BASE_URL.rstrip("/")
        if not self.api_key and base_url == OPENAI_BASE_URL:
            raise ImproperlyConfigured(
                "ChatCompletionsAgent needs an API key for OpenAI: set "
                'MEDIASTREAM["AGENT"]["OPTIONS"]["API_KEY"] or the OPENAI_API_KEY environment variable '
                "(or BASE_URL to a server that needs none)."
            )
        if not MODEL or not isinstance(MODEL, str):
            raise ValueError("MODEL must name the model")
        if isinstance(REQUEST_TIMEOUT, bool) or not isinstance(REQUEST_TIMEOUT, (int, float)) or REQUEST_TIMEOUT <= 0:
            raise ValueError(f"REQUEST_TIMEOUT must be a positive number of seconds, got {REQUEST_TIMEOUT!r}")
        self.url = base_url + "/chat/completions"
        self.model = MODEL
        self.temperature = TEMPERATURE
        self.timeout = float(REQUEST_TIMEOUT)

    # --- the request ------------------------------------------------------------------------------------

    def request_body(self, messages: Sequence[ChatMessage], tools: Sequence[Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(messages, instructions=self.instructions),
            "stream": True,
        }
        if tools:
            body["tools"] = chat_tools(tools)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    # --- the reply --------------------------------------------------------------------------------------

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[Any] = (), call: CallContext | None = None
    ) -> AsyncIterator[TextDelta | ToolCallRequest]:
        calls = _ToolCallPieces()
        try:
            async with self._http().stream(
                "POST", self.url, json=self.request_body(messages, tools), headers=self.headers()
            ) as response:
                if response.status_code >= 400:
                    detail = self.clean(_error_detail(await response.aread()))
                    raise AgentError(
                        f"{self.vendor} returned HTTP {response.status_code}: "
                        f"{detail or response.reason_phrase or 'no error message'}"
                    )
                async for data in _sse_data(response):
                    if data.strip() == "[DONE]":
                        break
                    chunk = _parse_chunk(data)
                    if chunk.get("error"):
                        raise AgentError(f"{self.vendor} error: {self.clean(_error_text(chunk['error']))}")
                    for choice in chunk.get("choices") or ():
                        if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                            continue
                        delta = choice.get("delta") or {}
                        content = delta.get("content") if isinstance(delta, Mapping) else None
                        if isinstance(content, str) and content:
                            yield TextDelta(content)
                        if isinstance(delta, Mapping):
                            calls.add(delta.get("tool_calls"))
                        if choice.get("finish_reason"):
                            for request in calls.drain():
                                yield request
            for request in calls.drain():  # a server that ends the stream without a finish_reason
                yield request
        except httpx.TimeoutException as exc:
            raise AgentError(f"{self.vendor} timed out ({type(exc).__name__}, limit {self.timeout:g}s)") from None
        except httpx.HTTPError as exc:
            raise AgentError(f"{self.vendor} request failed: {type(exc).__name__}: {self.clean(str(exc))}") from None

    def clean(self, text: str) -> str:
        """One short printable line, with our own key blanked out should the server echo it."""
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return sanitize(text, MAX_ERROR_CHARS)


# --- the wire format --------------------------------------------------------------------------------------


def chat_messages(messages: Sequence[ChatMessage], *, instructions: str = "") -> list[dict[str, Any]]:
    """The conversation as Chat Completions ``messages``: the system prompt first, keypresses as words."""
    out: list[dict[str, Any]] = []
    if instructions:
        out.append({"role": "system", "content": instructions})
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": message.content or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": call.raw_arguments or json.dumps(call.arguments),
                            },
                        }
                        for call in message.tool_calls
                    ],
                }
            )
        elif message.role == "tool":
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content})
        else:
            out.append({"role": message.role, "content": message.text})
    return out


def chat_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Tools as Chat Completions ``tools``: ``{"type": "function", "function": {name, description, parameters}}``."""
    out = []
    for tool in tools:
        spec = tool.spec() if isinstance(tool, Tool) else dict(tool)
        spec.pop("client", None)
        out.append({"type": "function", "function": spec})
    return out


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        name, _, value = line.partition(":")
        if name == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise AgentError(f"{ChatCompletionsAgent.vendor} sent an event that is not JSON: {sanitize(data, 80)}") from None
    if not isinstance(chunk, dict):
        raise AgentError(f"{ChatCompletionsAgent.vendor} sent an event that is not a JSON object")
    return chunk


@dataclass
class _ToolCallPieces:
    """Tool calls assembled from their streamed pieces, by ``index``."""

    pieces: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, deltas: Any) -> None:
        if not isinstance(deltas, list):
            return
        for position, delta in enumerate(deltas):
            if not isinstance(delta, Mapping):
                continue
            index = delta.get("index", position)
            entry = self.pieces.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if delta.get("id"):
                entry["id"] = str(delta["id"])
            function = delta.get("function") or {}
            if isinstance(function, Mapping):
                if function.get("name") and not entry["name"]:
                    entry["name"] = str(function["name"])
                if isinstance(function.get("arguments"), str):
                    entry["arguments"] += function["arguments"]

    def drain(self) -> list[ToolCallRequest]:
        requests = [
            ToolCallRequest(ToolCall.parse(entry["id"] or f"call_{index}", entry["name"], entry["arguments"]))
            for index, entry in sorted(self.pieces.items())
        ]
        self.pieces.clear()
        return requests


def _error_detail(raw: bytes) -> str:
    """OpenAI answers ``{"error": {"message", "type", "code"}}``; others may answer text."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
    if isinstance(body, dict) and body.get("error"):
        return _error_text(body["error"])
    return raw.decode("utf-8", "replace")


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        text = str(error.get("message") or error.get("code") or error.get("type") or "unknown error")
        code = error.get("code")
        return f"{text} ({code})" if code and str(code) not in text else text
    return str(error)
