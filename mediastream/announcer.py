"""Ordered side effects of a stream, off the per-frame path.

The consumer hands over :class:`~mediastream.session.Announce` actions without
awaiting; one task per stream delivers them in order: the rows go to the
stream's :class:`~mediastream.rows.StreamRows`, then the Django signal is
sent, then the message is handed to the call's events group
(:class:`~mediastream.broadcasts.GroupBroadcasts`). Neither a database outage
nor a channel-layer outage stops an event: while the database answers, a
signal follows its row (a receiver may read it); while it does not, the rows
wait and are written when it is back. A slow receiver or database delays only
this task, never the media path or the channel-layer commands.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from channels.layers import BaseChannelLayer

from .broadcasts import GroupBroadcasts
from .groups import events_group
from .messages import EventMessage
from .rows import Row, StreamRows, event_row, finish_row, transcript_row
from .session import Announce
from .signals import SIGNALS

__all__ = ["Announcer"]

logger = logging.getLogger(__name__)

#: How long a signal waits for its event's row while the database answers (a slow one does not hold events up).
ROW_WAIT = 2.0


@dataclass
class Announcer:
    sender: type
    call_sid: str
    stream_sid: str
    call_id: int
    stream_id: int
    channel_layer: BaseChannelLayer | None
    rows: StreamRows | None = None
    broadcasts: GroupBroadcasts | None = None
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    _task: asyncio.Task | None = None

    def start(self) -> None:
        from .conf import app_settings

        self.rows = StreamRows(
            self.stream_sid,
            max_rows=app_settings.DATABASE_BACKLOG_ROWS,
            keep_for=app_settings.DATABASE_BACKLOG_SECONDS,
        )
        if self.channel_layer is not None:
            self.broadcasts = GroupBroadcasts(self.channel_layer, events_group(self.call_sid), self.stream_sid)
        self._task = asyncio.create_task(self._run(), name=f"announcer:{self.stream_sid}")

    def announce(self, announcement: Announce) -> None:
        """Queue an announcement; never blocks."""
        self._queue.put_nowait(announcement)

    async def finish(self, *, close_code: int | None, close_reason: str, stats: dict, timeout: float = 5.0) -> None:
        """Record the stream's end after every row announced before it; waits (bounded) unless the database is away."""
        self._queue.put_nowait(finish_row(self.stream_id, close_code=close_code, close_reason=close_reason, stats=stats))
        await self.flush(timeout)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been delivered."""
        if self._task is None or self._task.done():
            return
        barrier = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(barrier)
        try:
            await asyncio.wait_for(asyncio.shield(barrier), timeout)
        except TimeoutError:
            logger.warning("Stream %s: announcements still pending after %.0fs", self.stream_sid, timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop; all within ``timeout`` (rows still waiting for the database go on in the background)."""
        if self._task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            logger.warning("Stream %s: announcements not delivered before teardown timeout", self.stream_sid)
        self._task = None
        if self.broadcasts is not None:
            await self.broadcasts.close(max(0.0, deadline - loop.time()))
        await self.rows.close(max(0.0, deadline - loop.time()))

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            try:
                if isinstance(item, Row):
                    await self._write([item])
                else:
                    await self._deliver(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Stream %s: delivering %s failed", self.stream_sid, getattr(item, "event", item))

    async def _deliver(self, item: Announce) -> None:
        await self._write(self._rows_of(item))
        signal = SIGNALS.get(item.event)
        if signal is not None:
            results = await signal.asend_robust(
                sender=self.sender, call_sid=self.call_sid, stream_sid=self.stream_sid, **item.data
            )
            for receiver, result in results:
                if isinstance(result, Exception):
                    logger.error(
                        "Signal receiver %r for %s failed", receiver, item.event, exc_info=result
                    )
        if item.event.broadcast and self.broadcasts is not None:
            message = EventMessage(str(item.event), self.call_sid, self.stream_sid, item.data)
            self.broadcasts.send(message.to_message())

    async def _write(self, rows: list[Row]) -> None:
        """Hand ``rows`` to the writer; wait for their first try unless the database is away (then they wait, not us)."""
        tries = [self.rows.add(row) for row in rows]
        if tries:
            await asyncio.wait(tries, timeout=ROW_WAIT)

    def _rows_of(self, item: Announce) -> list[Row]:
        rows = []
        row = item.transcript
        if row is not None:
            rows.append(
                transcript_row(
                    self.call_id,
                    self.stream_id,
                    speaker=row.speaker,
                    text=row.text,
                    interrupted=row.interrupted,
                    start_ms=row.start_ms,
                    end_ms=row.end_ms,
                )
            )
        if item.event.recorded:
            rows.append(event_row(self.call_id, self.stream_id, str(item.event), item.data))
        return rows
