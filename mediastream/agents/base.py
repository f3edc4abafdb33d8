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

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..backends.base import Backend
from .calls import CallContext, ToolCall
from .tools import ToolBox, load_tools

__all__ = [
    "AgentBackend",
    "BaseAgent",
    "BaseSpeechAgent",
    "BaseSpeechSession",
    "CallContext",
    "ChatMessage",
    "ToolCall",
    "TextDelta",
    "ToolCallRequest",
    "AgentError",
    "AudioDelta",
    "Transcript",
    "CallerSpeechStarted",
    "ResponseDone",
    "SpeechError",
    "SpeechEvent",
    "dtmf_text",
]


class AgentError(Exception):
    """The agent's model or vendor failed (the engine ends the turn and says so in the event log)."""


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

    @property
    def text(self) -> str:
        """What a text model reads: the content, or a keypress said in words."""
        return dtmf_text(self.dtmf) if self.dtmf and not self.content else self.content


def dtmf_text(digits: str) -> str:
    """A keypress as a sentence a model understands."""
    return f"The caller pressed {digits} on the keypad."


@dataclass(frozen=True, slots=True)
class TextDelta:
    """More of the reply's text, as the model writes it."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """The model asks for ``call`` to run; the reply's text so far stays said."""

    call: ToolCall


class AgentBackend(Backend):
    """What every agent has, text or speech: the options common to all of them, and its tools.

    ``MEDIASTREAM["AGENT"]`` names a subclass of this class (a
    :class:`BaseAgent` or a :class:`BaseSpeechAgent`); its ``__init__`` takes
    the OPTIONS every agent has and a subclass passes them on. Tools are
    loaded when the agent is built, so a wrong dotted path in ``TOOLS`` fails
    at startup.
    """

    #: The system prompt.
    instructions: str = ""
    #: Spoken when the stream starts (empty: the caller speaks first).
    greeting: str = ""
    #: Tools the agent may call: dotted paths of callables, or client-tool dicts.
    tool_paths: Sequence[Any] = ()
    #: Seconds a tool may run before its result is an error the model sees.
    tool_timeout: float = 10.0
    #: Seconds a tool may run before the model is told it timed out.
    tool_timeout: float = 10.0

    def __init__(
        self,
        *,
        INSTRUCTIONS: str = "",
        GREETING: str = "",
        TOOLS: Sequence[Any] = (),
        TOOL_TIMEOUT: float = 10.0,
    ) -> None:
        super().__init__()
        if not isinstance(INSTRUCTIONS, str) or not isinstance(GREETING, str):
            raise ValueError("INSTRUCTIONS and GREETING must be strings")
        if isinstance(TOOL_TIMEOUT, bool) or not isinstance(TOOL_TIMEOUT, (int, float)) or TOOL_TIMEOUT <= 0:
            raise ValueError(f"TOOL_TIMEOUT must be a positive number of seconds, got {TOOL_TIMEOUT!r}")
        self.instructions = INSTRUCTIONS
        self.greeting = GREETING
        self.tool_paths = tuple(TOOLS or ())
        self.tool_timeout = float(TOOL_TIMEOUT)
        #: :class:`mediastream.agents.tools.Tool` objects, in the order of ``TOOLS``.
        self.tools = load_tools(self.tool_paths)

    def toolbox(self, client_runner: Any = None) -> ToolBox:
        """A :class:`~mediastream.agents.tools.ToolBox` of this agent's tools, with its ``TOOL_TIMEOUT``."""
        return ToolBox(self.tools, timeout=self.tool_timeout, client_runner=client_runner)


class BaseAgent(AgentBackend):
    """A text agent. OPTIONS common to every agent: ``INSTRUCTIONS``, ``GREETING``, ``TOOLS``, ``TOOL_TIMEOUT``."""

    def reply(self, messages: Sequence[ChatMessage], *, tools: Sequence[Any], call: CallContext) -> AsyncIterator[TextDelta | ToolCallRequest]:
        """Stream the answer to the conversation so far (its last message is the caller's turn or a tool result).

        ``tools`` are :class:`mediastream.agents.tools.Tool` objects (their JSON
        schemas for the model). Raise :class:`AgentError` for a vendor failure.
        Closing the iterator (``aclose()``) stops the model's work at once.
        """
        raise NotImplementedError("subclasses of BaseAgent must provide reply()")


# --- speech-to-speech -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """Agent audio for the caller, 8 kHz mu-law, part of the model's item ``item_id``."""

    item_id: str
    mulaw: bytes


@dataclass(frozen=True, slots=True)
class Transcript:
    """What was said, as text: ``role`` "user" (the caller) or "assistant" (the agent)."""

    role: Literal["user", "assistant"]
    text: str
    final: bool
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class CallerSpeechStarted:
    """The model's VAD heard the caller start speaking (barge-in: stop the agent's audio)."""

    item_id: str = ""
    audio_start_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """A response ended: ``status`` is "completed", "cancelled", "incomplete" or "failed"."""

    item_id: str = ""
    status: str = "completed"


@dataclass(frozen=True, slots=True)
class SpeechError:
    """The vendor reported an error; ``fatal`` when the session is over (the connection is gone)."""

    message: str
    fatal: bool = False


SpeechEvent = AudioDelta | Transcript | CallerSpeechStarted | ToolCallRequest | ResponseDone | SpeechError


class BaseSpeechSession:
    """One call's speech-to-speech session (see :class:`BaseSpeechAgent`).

    :meth:`events` yields :data:`SpeechEvent` objects until the session is
    closed or its connection is lost (a fatal :class:`SpeechError` last).
    """

    async def connect(self) -> None:
        """Open the connection and configure the session; speaks the greeting if there is one."""
        raise NotImplementedError

    def send_audio(self, mulaw: bytes) -> None:
        """Caller audio, 8 kHz mu-law; never blocks."""
        raise NotImplementedError

    def events(self) -> AsyncIterator[SpeechEvent]:
        """What the model does: audio, transcripts, speech starts, tool calls, response ends."""
        raise NotImplementedError

    async def respond(self, instructions: str = "") -> None:
        """Ask the model to speak now (``instructions`` for this response only)."""
        raise NotImplementedError

    async def cancel_response(self) -> None:
        raise NotImplementedError

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """The caller heard only ``audio_end_ms`` of ``item_id``: cut the model's memory of it there."""
        raise NotImplementedError

    async def send_tool_result(self, call_id: str, output: str) -> None:
        """Hand a tool's output to the model and let it carry on speaking."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class BaseSpeechAgent(AgentBackend):
    """A speech-to-speech agent: one :class:`BaseSpeechSession` per call."""

    def open_session(self, *, call: CallContext, tools: Sequence[Any], history: Sequence[ChatMessage]) -> BaseSpeechSession:
        raise NotImplementedError("subclasses of BaseSpeechAgent must provide open_session()")
