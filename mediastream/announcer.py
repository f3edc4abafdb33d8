"""Ordered side effects of a stream, off the per-frame path.

The consumer hands over :class:`~mediastream.session.Announce` actions without
awaiting; one task per stream writes the rows, sends the Django signal and
broadcasts on the call's events group, in order. A slow receiver or database
delays only this task, never the media path or the channel-layer commands.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer

from . import db
from .groups import events_group
from .messages import EventMessage
from .session import Announce
from .signals import SIGNALS

__all__ = ["Announcer"]

logger = logging.getLogger(__name__)


@dataclass
class Announcer:
    sender: type
    call_sid: str
    stream_sid: str
    call_id: int
    stream_id: int
    channel_layer: BaseChannelLayer | None
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    _task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"announcer:{self.stream_sid}")

    def announce(self, announcement: Announce) -> None:
        """Queue an announcement; never blocks."""
        self._queue.put_nowait(announcement)

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
        """Deliver what is queued (bounded by ``timeout``), then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            logger.warning("Stream %s: announcements not delivered before teardown timeout", self.stream_sid)
        self._task = None

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
                await self._deliver(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Stream %s: delivering %s failed", self.stream_sid, item.event)

    async def _deliver(self, item: Announce) -> None:
        if item.event.recorded or item.transcript is not None:
            await database_sync_to_async(self._write)(item)
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
        if item.event.broadcast and self.channel_layer is not None:
            message = EventMessage(str(item.event), self.call_sid, self.stream_sid, item.data)
            await self.channel_layer.group_send(events_group(self.call_sid), message.to_message())

    def _write(self, item: Announce) -> None:
        row = item.transcript
        if row is not None:
            db.add_transcript(
                self.call_id,
                self.stream_id,
                speaker=row.speaker,
                text=row.text,
                interrupted=row.interrupted,
                start_ms=row.start_ms,
                end_ms=row.end_ms,
            )
        if item.event.recorded:
            db.add_event(self.call_id, self.stream_id, str(item.event), item.data)
