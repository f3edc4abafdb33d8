"""Channel-layer messages: the commands ``mediastream.api`` sends, the consumer's replies, and events.

This module owns their wire form. A command goes straight to the channel of the
consumer that holds a call (``mediastream.directory``); a reply goes to the channel named in
``reply_to``; events go to the call's events group for listeners (the console,
agents in other processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .playback.player import Outcome, PlaybackResult

__all__ = [
    "Say",
    "Interrupt",
    "Command",
    "Queued",
    "Result",
    "Interrupted",
    "EventMessage",
    "parse_command",
    "COMMAND_TYPES",
    "EVENT_TYPE",
]


@dataclass(frozen=True, slots=True)
class Say:
    """Play text (through TTS) or ready 8 kHz mu-law audio on the call."""

    type: ClassVar[str] = "playback.say"
    item_id: str
    text: str = ""
    audio: bytes | None = None
    interruptible: bool = True
    reply_to: str | None = None

    def to_message(self) -> dict[str, Any]:
        message = {"type": self.type, "item_id": self.item_id, "interruptible": self.interruptible}
        if self.audio is not None:
            message["audio"] = self.audio
        else:
            message["text"] = self.text
        if self.reply_to:
            message["reply_to"] = self.reply_to
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Say:
        audio = message.get("audio")
        return cls(
            item_id=str(message.get("item_id") or ""),
            text=str(message.get("text") or ""),
            audio=audio if isinstance(audio, bytes) else None,
            interruptible=bool(message.get("interruptible", True)),
            reply_to=_channel(message),
        )


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Barge-in from outside: stop what the call is saying and drop its queue."""

    type: ClassVar[str] = "playback.interrupt"
    reason: str = "interrupted"
    reply_to: str | None = None

    def to_message(self) -> dict[str, Any]:
        message = {"type": self.type, "reason": self.reason}
        if self.reply_to:
            message["reply_to"] = self.reply_to
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Interrupt:
        return cls(reason=str(message.get("reason") or "interrupted"), reply_to=_channel(message))


Command = Say | Interrupt

COMMAND_TYPES: dict[str, type[Say] | type[Interrupt]] = {Say.type: Say, Interrupt.type: Interrupt}


def parse_command(message: dict[str, Any]) -> Command | None:
    """The command a channel-layer message carries, or None for a type this app does not send."""
    command = COMMAND_TYPES.get(message.get("type", ""))
    return command.from_message(message) if command is not None else None


def _channel(message: dict[str, Any]) -> str | None:
    reply_to = message.get("reply_to")
    return reply_to if isinstance(reply_to, str) and reply_to else None


# --- replies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Queued:
    """A ``Say`` was accepted into the stream's queue."""

    type: ClassVar[str] = "playback.queued"
    item_id: str
    stream_sid: str

    def to_message(self) -> dict[str, Any]:
        return {"type": self.type, "item_id": self.item_id, "stream_sid": self.stream_sid}


@dataclass(frozen=True, slots=True)
class Result:
    """How a ``Say`` ended (played, interrupted, failed, ...)."""

    type: ClassVar[str] = "playback.result"
    result: PlaybackResult

    def to_message(self) -> dict[str, Any]:
        return {"type": self.type, **self.result.as_dict()}

    @staticmethod
    def parse(message: dict[str, Any]) -> PlaybackResult:
        return PlaybackResult(
            item_id=message["item_id"],
            outcome=Outcome(message["outcome"]),
            text=message.get("text", ""),
            error=message.get("error", ""),
            reason=message.get("reason", ""),
            audio_seconds=message.get("audio_seconds") or 0.0,
            queued_ms=message.get("queued_ms"),
            first_audio_ms=message.get("first_audio_ms"),
            total_ms=message.get("total_ms"),
        )

    @classmethod
    def no_stream(cls, item_id: str) -> Result:
        """What a waiting ``speak()`` hears when the socket holds no live stream."""
        return cls(PlaybackResult(item_id, Outcome.NO_STREAM))


@dataclass(frozen=True, slots=True)
class Interrupted:
    """An ``Interrupt`` was carried out: ``count`` items cut off; ``live`` False without a stream."""

    type: ClassVar[str] = "playback.interrupted"
    count: int
    live: bool

    def to_message(self) -> dict[str, Any]:
        return {"type": self.type, "count": self.count, "live": self.live}


Reply = Queued | Result | Interrupted

# --- events -------------------------------------------------------------------------

EVENT_TYPE = "mediastream.event"


@dataclass(frozen=True, slots=True)
class EventMessage:
    """A stream event as listeners on the call's events group receive it."""

    type: ClassVar[str] = EVENT_TYPE
    event: str
    call_sid: str
    stream_sid: str
    data: dict[str, Any]

    def to_message(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "event": self.event,
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "data": self.data,
        }
