"""Channel-layer group names: the events group of each call, for its many listeners.

Commands do not use a group: they go straight to the stream's channel
(``mediastream.directory``). Group names must be < 100 characters of
``[A-Za-z0-9._-]``; a CallSid is ``CA`` + 32 hex, so it is used as is after a
character filter.
"""

import re

__all__ = ["events_group"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _safe(call_sid: str) -> str:
    return _UNSAFE.sub("_", call_sid)[:80]


def events_group(call_sid: str) -> str:
    """Group listeners join to follow a call (transcripts, DTMF, playback outcomes)."""
    return f"mediastream.events.{_safe(call_sid)}"
