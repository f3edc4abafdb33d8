"""The agent backend contract.

An agent is built as ``BACKEND(**OPTIONS)`` from ``MEDIASTREAM["AGENT"]`` (or
a per-call config). Two shapes:

* a **text agent** (:class:`BaseAgent`) answers a caller turn with streamed
  text and tool calls; the conversation engine speaks the text through the
  stream's TTS, runs the tools and calls :meth:`BaseAgent.reply` again with
  their results, until a reply has no more tool calls;
* a **speech agent** (:class:`BaseSpeechAgent`, e.g. the OpenAI Realtime API)
  hears the caller's audio and speaks itself, through one session per call.

Both are cancelled by the engine at any point (the caller started a new
turn): a reply generator is closed (``aclose``), a speech response cancelled.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..backends.base import Backend

__all__ = [
    "BaseAgent",
    "BaseSpeechAgent",
    "BaseSpeechSession",
    "CallContext",
    "ChatMessage",
    "ToolCall",
    "TextDelta",
    "ToolCallRequest",
    "AgentError",
]


class AgentError(Exception):
    """The agent's model or vendor failed (the engine ends the turn and says so in the event log)."""


@dataclass(frozen=True, slots=True)
class CallContext:
    """Which call a reply or a tool runs for."""

    call_sid: str
    stream_sid: str = ""
    turn_id: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asked for a tool: ``arguments`` is the parsed JSON object (``raw_arguments`` as sent)."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str = ""

    @classmethod
    def parse(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """Arguments as the model sent them; unparseable JSON becomes ``{}`` (the tool then reports what is missing)."""
        try:
            arguments = json.loads(raw_arguments) if raw_arguments.strip() else {}
        except ValueError:
            arguments = {}
        return cls(id, name, arguments if isinstance(arguments, dict) else {}, raw_arguments)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One entry of a call's conversation, in the shape chat models take.

    ``dtmf`` is set on a user message that is a keypress rather than speech.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    dtmf: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """More of the reply's text, as the model writes it."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """The model asks for ``call`` to run; the reply's text so far stays said."""

    call: ToolCall


class BaseAgent(Backend):
    """A text agent. OPTIONS common to every agent: ``INSTRUCTIONS``, ``GREETING``, ``TOOLS``."""

    #: The system prompt.
    instructions: str = ""
    #: Spoken when the stream starts (empty: the caller speaks first).
    greeting: str = ""
    #: Tools the agent may call: dotted paths of callables, or client-tool dicts.
    tool_paths: Sequence[Any] = ()

    def reply(self, messages: Sequence[ChatMessage], *, tools: Sequence[Any], call: CallContext) -> AsyncIterator[TextDelta | ToolCallRequest]:
        """Stream the answer to the conversation so far (its last message is the caller's turn or a tool result).

        ``tools`` are :class:`mediastream.agents.tools.Tool` objects (their JSON
        schemas for the model). Raise :class:`AgentError` for a vendor failure.
        """
        raise NotImplementedError("subclasses of BaseAgent must provide reply()")


class BaseSpeechSession:
    """One call's speech-to-speech session (see :class:`BaseSpeechAgent`)."""

    async def connect(self) -> None:
        raise NotImplementedError

    def send_audio(self, mulaw: bytes) -> None:
        """Caller audio, 8 kHz mu-law; never blocks."""
        raise NotImplementedError

    def events(self) -> AsyncIterator[Any]:
        """What the model does: audio, transcripts, speech starts, tool calls, response ends."""
        raise NotImplementedError

    async def cancel_response(self) -> None:
        raise NotImplementedError

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """The caller heard only ``audio_end_ms`` of ``item_id``: cut the model's memory of it there."""
        raise NotImplementedError

    async def send_tool_result(self, call_id: str, output: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class BaseSpeechAgent(Backend):
    """A speech-to-speech agent: one :class:`BaseSpeechSession` per call."""

    instructions: str = ""
    greeting: str = ""
    tool_paths: Sequence[Any] = ()

    def open_session(self, *, call: CallContext, tools: Sequence[Any], history: Sequence[ChatMessage]) -> BaseSpeechSession:
        raise NotImplementedError("subclasses of BaseSpeechAgent must provide open_session()")
