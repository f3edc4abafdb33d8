"""The voice behind a relay session: what it must do, and which one a session gets.

``MEDIASTREAM["AGENT"]`` decides; without one, the embedded demo agent
(:data:`EMBEDDED_AGENT`, a :class:`~mediastream.agents.scripted.ScriptedAgent`)
answers, so the relay works offline out of the box. A speech agent (the
Realtime API) hears and speaks itself (:class:`~.speech.SpeechVoice`); a text
agent gets the embedded ears and voice (:class:`~.cascade.CascadeVoice`).

A voice reports through a :class:`VoiceOutput` (the relay session) and never
sends anything itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

from django.core.exceptions import ImproperlyConfigured

from voicecall.logsafe import sanitize

from ..agents.base import BaseAgent, BaseSpeechAgent, CallContext, ToolCall
from .protocol import CreateParams, RelayError

__all__ = ["EMBEDDED_AGENT", "Playhead", "Voice", "VoiceOutput", "open_voice", "relay_agent"]

#: The agent a relay session talks to when ``MEDIASTREAM["AGENT"]`` is unset.
EMBEDDED_AGENT = {
    "BACKEND": "mediastream.agents.scripted.ScriptedAgent",
    "OPTIONS": {"SCRIPT": "mediastream.agents.demo"},
}


class VoiceOutput(Protocol):
    """What a voice tells its session (which turns each into a ``talk.event`` for the owner)."""

    def audio(self, pcm: bytes) -> None: ...

    def clear(self) -> None: ...

    def mark(self, name: str) -> None: ...

    def transcript(self, role: Literal["user", "assistant"], text: str, final: bool) -> None: ...

    def error(self, message: str) -> None: ...

    def finished(self, reason: Literal["completed", "error"]) -> None:
        """The voice is over (a lost vendor connection, or the agent ended the conversation)."""

    async def client_tool(self, call: ToolCall, context: CallContext) -> Any:
        """Run a client tool in the browser: its ``toolResult``."""


class Voice:
    """One session's voice. ``connect`` raises when it cannot be had; the rest never raise."""

    #: "realtime" or "cascade", shown to the client.
    provider: str = ""
    #: The create options this voice applied (echoed in create's result).
    applied: dict[str, str]

    async def connect(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Begin speaking and listening (after the session said ``ready``): the greeting, if any."""

    def send_audio(self, pcm: bytes) -> None:
        """The browser's microphone, PCM16 24 kHz."""
        raise NotImplementedError

    async def cancel(self) -> None:
        """Stop the reply now (barge-in); the session tells the browser to ``clear``."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Playhead:
    """Where the browser is in the audio sent to it, estimated from how much was sent and when.

    The browser schedules each piece right after the previous one, so what it
    has left to play is what was sent minus the time since the first piece.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0

    def sent(self, seconds: float) -> None:
        now = self._clock()
        self._until = max(self._until, now) + seconds

    def playing(self) -> bool:
        return self._clock() < self._until

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())

    def reset(self) -> None:
        self._until = 0.0


def relay_agent() -> BaseAgent | BaseSpeechAgent:
    """The agent relay sessions talk to (raises :class:`RelayError` when it cannot be built)."""
    from ..agents.selection import build_agent
    from ..backends import backends

    try:
        agent = backends.agent or build_agent(EMBEDDED_AGENT, source="the talk relay's embedded agent")
    except (ImproperlyConfigured, ValueError, TypeError) as exc:
        raise RelayError(f"The relay's agent cannot be built: {sanitize(str(exc), 200)}") from None
    if not isinstance(agent, (BaseAgent, BaseSpeechAgent)):
        raise RelayError(f"The relay cannot talk to a {type(agent).__name__}: it is neither a text nor a speech agent")
    return agent


def open_voice(options: CreateParams, *, session_id: str, output: VoiceOutput) -> Voice:
    """A new, unconnected voice for one session."""
    agent = relay_agent()
    if isinstance(agent, BaseSpeechAgent):
        from .speech import SpeechVoice

        return SpeechVoice(agent, session_id=session_id, output=output, options=options)
    from .cascade import CascadeVoice

    return CascadeVoice(agent, session_id=session_id, output=output, options=options)
