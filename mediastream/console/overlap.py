"""The events a (re)connecting console would see twice: in its snapshot and again live.

The console joins the events group before it reads the event log, so no event
falls between the two; an event whose row the snapshot read can still arrive
live afterwards (the announcer writes the row, then broadcasts). Live events
carry no row id, so such a repeat is recognised by its content: the same
type, stream and data as a snapshot row written shortly before the snapshot,
within a short window after it, each row matching at most once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["OVERLAP_SECONDS", "fingerprint", "SnapshotOverlap"]

#: Rows this recent at snapshot time may still be broadcast, for this long after it.
OVERLAP_SECONDS = 10.0

#: Events of which a stream has exactly one: known by type and stream alone (their rows'
#: payloads are written by the admission and finish transactions, not the announcer).
_ONCE_PER_STREAM = frozenset({"stream.started", "stream.stopped"})


def fingerprint(event: dict[str, Any]) -> tuple:
    kind, stream_sid = event.get("event"), event.get("stream_sid") or ""
    if kind in _ONCE_PER_STREAM:
        return (kind, stream_sid)
    return (kind, stream_sid, json.dumps(event.get("data"), sort_keys=True, default=str))


class SnapshotOverlap:
    """``repeats(event)``: True for a live event the snapshot already delivered (once per row)."""

    def __init__(
        self,
        snapshot_events: Iterable[dict[str, Any]],
        *,
        snapshot_ms: int,
        window: float = OVERLAP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cutoff = snapshot_ms - window * 1000
        self._pending = Counter(
            fingerprint(event) for event in snapshot_events if event.get("id") is not None and (event.get("at") or 0) >= cutoff
        )
        self._clock = clock
        self._until = clock() + window

    def repeats(self, event: dict[str, Any]) -> bool:
        if not self._pending:
            return False
        if self._clock() > self._until:
            self._pending.clear()
            return False
        key = fingerprint(event)
        if self._pending[key] <= 0:
            return False
        self._pending[key] -= 1
        if not self._pending[key]:
            del self._pending[key]
        return True
