"""Ordered side effects of a stream, off the per-frame path.

The consumer pushes (event, data) pairs without awaiting; one task per stream
writes the rows, sends the Django signal and broadcasts on the call's events
group, in order. A slow receiver or database delays only this task, never the
media path or the channel-layer commands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer

from . import db, signals
from .groups import events_group

__all__ = ["Announcer", "Announcement"]

logger = logging.getLogger(__name__)

_SIGNALS = {
    "stream.started": signals.stream_started,
    "stream.stopped": signals.stream_stopped,
    "speech.started": signals.speech_started,
    "transcript.partial": signals.transcript_partial,
    "transcript.final": signals.transcript_final,
    "dtmf": signals.dtmf_received,
    "playback.started": signals.playback_started,
    "playback.finished": signals.playback_finished,
}


@dataclass
class Announcement:
    event: str
    data: dict[str, Any]
    #: Write a CallEvent row (and run ``also`` in the same thread hop, e.g. a transcript row).
    record: bool = True
    also: Callable[[], Any] | None = None
    broadcast: bool = True


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

    def announce(self, event: str, data: dict[str, Any] | None = None, **options: Any) -> None:
        """Queue an announcement; never blocks."""
        self._queue.put_nowait(Announcement(event, data or {}, **options))

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

    async def _deliver(self, item: Announcement) -> None:
        if item.record or item.also is not None:
            await database_sync_to_async(self._write)(item)
        signal = _SIGNALS.get(item.event)
        if signal is not None:
            results = await signal.asend_robust(
                sender=self.sender, call_sid=self.call_sid, stream_sid=self.stream_sid, **item.data
            )
            for receiver, result in results:
                if isinstance(result, Exception):
                    logger.error(
                        "Signal receiver %r for %s failed", receiver, item.event, exc_info=result
                    )
        if item.broadcast and self.channel_layer is not None:
            await self.channel_layer.group_send(
                events_group(self.call_sid),
                {
                    "type": "mediastream.event",
                    "event": item.event,
                    "call_sid": self.call_sid,
                    "stream_sid": self.stream_sid,
                    "data": item.data,
                },
            )

    def _write(self, item: Announcement) -> None:
        if item.also is not None:
            item.also()
        if item.record:
            db.add_event(self.call_id, self.stream_id, item.event, item.data)
