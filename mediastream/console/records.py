"""What the console reads from the call's records: the snapshot on connect, and the periodic poll.

Synchronous ORM code (the consumer runs it on a thread). Events are plain
dicts in the console's wire form (:mod:`.wire`). The poll reads only the rows
no stream broadcasts (a queued line, Twilio's callbacks, call control, a
refused or reaped stream); the live ones arrive on the events group.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from voicecall.models import TERMINAL_STATUSES, Call, CallEvent

from ..events import StreamEvent

__all__ = ["LIVE_EVENT_TYPES", "Snapshot", "epoch_ms", "call_state", "event_dict", "load_snapshot", "poll_records"]

#: Event types the stream's announcer broadcasts on the call's events group as they happen.
#: A refused or reaped stream's row is written without a live stream to announce it.
LIVE_EVENT_TYPES = frozenset(
    str(event) for event in StreamEvent
    if event.broadcast and event not in (StreamEvent.STREAM_REJECTED, StreamEvent.STREAM_REAPED)
)

#: Stream counters the console shows (MediaStream.stats, written when a stream ends).
STATS_SHOWN = ("media_frames", "sequence_gaps", "sequence_reorders", "timestamp_gaps", "marks", "dtmf")

#: The poll re-reads rows this far back: a row's id is taken before its transaction commits,
#: so rows of concurrent transactions can become visible out of id order.
POLL_LOOKBACK = timedelta(seconds=30)


def epoch_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


@dataclass(frozen=True)
class Snapshot:
    call_id: int
    call: dict[str, Any]
    events: list[dict[str, Any]]  # oldest first
    taken_at: datetime


def call_state(call: Call) -> dict[str, Any]:
    """The call's record and its streams, as the console shows them."""
    streams = [
        {
            "stream_sid": stream.stream_sid,
            "started_at": epoch_ms(stream.started_at),
            "stopped_at": epoch_ms(stream.stopped_at),
            "live": stream.stopped_at is None,
            "close_code": stream.close_code,
            "close_reason": stream.close_reason,
            "stats": {name: stream.stats.get(name) for name in STATS_SHOWN if isinstance(stream.stats, dict)},
        }
        for stream in call.streams.order_by("started_at", "id")
    ]
    return {
        "call_sid": call.call_sid,
        "status": call.status,
        "terminal": call.status in TERMINAL_STATUSES,
        "direction": call.direction,
        "from": call.from_number,
        "to": call.to_number,
        "created_at": epoch_ms(call.created_at),
        "answered_at": epoch_ms(call.answered_at),
        "ended_at": epoch_ms(call.ended_at),
        "duration": call.duration,
        "streams": streams,
    }


def event_dict(row: CallEvent) -> dict[str, Any]:
    return {
        "id": row.pk,
        "event": row.type,
        "stream_sid": row.stream.stream_sid if row.stream_id else "",
        "data": row.payload if isinstance(row.payload, dict) else {"value": row.payload},
        "at": epoch_ms(row.created_at),
    }


def load_snapshot(call_sid: str, limit: int) -> Snapshot | None:
    """The call's record and its latest ``limit`` event-log rows; None for an unknown CallSid."""
    call = Call.objects.filter(call_sid=call_sid).first()
    if call is None:
        return None
    taken_at = timezone.now()
    rows = CallEvent.objects.filter(call=call).select_related("stream").order_by("-id")[: max(0, limit)]
    events = [event_dict(row) for row in reversed(list(rows))]
    return Snapshot(call_id=call.pk, call=call_state(call), events=events, taken_at=taken_at)


def poll_records(call_id: int, since: datetime, limit: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The call's record now (None if it is gone) and the unbroadcast rows created since ``since - POLL_LOOKBACK``."""
    call = Call.objects.filter(pk=call_id).first()
    if call is None:
        return None, []
    rows = (
        CallEvent.objects.filter(call_id=call_id, created_at__gte=since - POLL_LOOKBACK)
        .exclude(type__in=LIVE_EVENT_TYPES)
        .select_related("stream")
        .order_by("id")[: max(1, limit)]
    )
    return call_state(call), [event_dict(row) for row in rows]
