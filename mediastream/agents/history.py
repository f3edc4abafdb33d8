"""A call's conversation history, rebuilt from its records.

The history lives in the database, not in the process: caller finals and what
the caller heard of the agent are transcript segments, keypresses and tool
calls are event-log rows. A stream that starts again for the same call (after
a transfer back, or in another process after a restart) picks the
conversation up where it was, and the admin shows the same thing.
"""

from __future__ import annotations

import json
from typing import Any

from voicecall.models import CallEvent, TranscriptSegment

from ..events import StreamEvent
from .base import ChatMessage, ToolCall

__all__ = ["load_history"]

_EVENTS = (StreamEvent.DTMF, StreamEvent.AGENT_TOOL_CALLED, StreamEvent.AGENT_TOOL_RESULT)


def load_history(call_id: int, *, limit: int = 200) -> list[ChatMessage]:
    """The last ``limit`` entries of the call's conversation, oldest first (sync: call it in a thread)."""
    rows: list[tuple[Any, int, ChatMessage]] = []
    for segment in TranscriptSegment.objects.filter(call_id=call_id).order_by("-created_at", "-id")[:limit]:
        role = "user" if segment.speaker == TranscriptSegment.Speaker.CALLER else "assistant"
        rows.append((segment.created_at, segment.pk, ChatMessage(role, segment.text)))
    events = CallEvent.objects.filter(call_id=call_id, type__in=[str(e) for e in _EVENTS]).order_by("-created_at", "-id")
    for event in events[:limit]:
        message = _from_event(event.type, event.payload or {})
        if message is not None:
            rows.append((event.created_at, event.pk, message))
    rows.sort(key=lambda row: (row[0], row[1]))
    return _paired([message for _, _, message in rows[-limit:]])


def _from_event(type: str, payload: dict[str, Any]) -> ChatMessage | None:
    if type == StreamEvent.DTMF:
        return ChatMessage("user", dtmf=str(payload.get("digit", "")))
    if type == StreamEvent.AGENT_TOOL_CALLED:
        arguments = payload.get("arguments") or {}
        call = ToolCall(str(payload.get("call_id", "")), str(payload.get("name", "")), arguments, json.dumps(arguments))
        return ChatMessage("assistant", tool_calls=(call,))
    if type == StreamEvent.AGENT_TOOL_RESULT:
        return ChatMessage(
            "tool", str(payload.get("output", "")), tool_call_id=str(payload.get("call_id", "")), name=str(payload.get("name", ""))
        )
    return None


def _paired(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Drop tool results whose call is not in the history (cut off by ``limit``): models refuse them."""
    called = {call.id for message in messages for call in message.tool_calls}
    return [m for m in messages if m.role != "tool" or m.tool_call_id in called]
