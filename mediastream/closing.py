"""Close codes and reasons, in one table.

daphne only sends close codes 1000 and 3000-4999 (autobahn refuses others and
the client would see 1011), so RFC 6455 codes are sent as 4000 + code. daphne
also drops close reasons on the wire; they are still logged and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["CloseCode", "Close", "CLOSES"]


class CloseCode(IntEnum):
    NORMAL = 1000
    POLICY = 4008  # 1008 policy violation
    TOO_BIG = 4009  # 1009 message too big
    INTERNAL_ERROR = 4011  # 1011 internal error
    TRY_AGAIN_LATER = 4013  # 1013 try again later


@dataclass(frozen=True, slots=True)
class Close:
    code: CloseCode
    reason: str


class CLOSES:
    """Every close the consumer makes, by name."""

    STOPPED = Close(CloseCode.NORMAL, "Stream stopped")
    START_TIMEOUT = Close(CloseCode.POLICY, "Start timeout")
    TOO_MANY_PENDING = Close(CloseCode.TRY_AGAIN_LATER, "Too many pending media stream connections")
    EVICTED = Close(CloseCode.TRY_AGAIN_LATER, "Evicted: too many pending media stream connections")
    MISSING_CALL_SID = Close(CloseCode.POLICY, "Missing callSid")
    UNKNOWN_CALL = Close(CloseCode.POLICY, "Unknown call")
    CALL_ENDED = Close(CloseCode.POLICY, "Call ended")
    INVALID_TOKEN = Close(CloseCode.POLICY, "Invalid stream token")
    STREAM_EXISTS = Close(CloseCode.POLICY, "Call already has a live stream")
    DUPLICATE_START = Close(CloseCode.POLICY, "Duplicate start")
    DUPLICATE_STREAM_SID = Close(CloseCode.POLICY, "Duplicate streamSid")
    MESSAGE_TOO_BIG = Close(CloseCode.TOO_BIG, "Message too big")
    BACKPRESSURE = Close(CloseCode.TRY_AGAIN_LATER, "Backpressure: send buffer exceeded")
    DATABASE_UNAVAILABLE = Close(CloseCode.TRY_AGAIN_LATER, "Database unavailable")
    INTERNAL_ERROR = Close(CloseCode.INTERNAL_ERROR, "Internal error")
    SHUTDOWN = Close(CloseCode.TRY_AGAIN_LATER, "Server shutting down")
    AGENT_ENDED = Close(CloseCode.NORMAL, "Call ended by the agent")
