"""Channel-layer group names: one command group and one events group per call.

Group names must be < 100 characters of ``[A-Za-z0-9._-]``; a CallSid is
``CA`` + 32 hex, so it is used as is after a character filter.
"""

import re

__all__ = ["call_group", "events_group"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _safe(call_sid: str) -> str:
    return _UNSAFE.sub("_", call_sid)[:80]


def call_group(call_sid: str) -> str:
    """Group the consumer owning the call's stream listens on (speak, interrupt)."""
    return f"mediastream.call.{_safe(call_sid)}"


def events_group(call_sid: str) -> str:
    """Group listeners join to follow a call (transcripts, DTMF, playback outcomes)."""
    return f"mediastream.events.{_safe(call_sid)}"
