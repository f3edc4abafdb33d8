"""One heartbeat per process for all its live streams, and the reaper for dead processes' streams.

The reaper closes streams whose heartbeat is older than STALE_STREAM_SECONDS.
Instead of each stream writing its own row every interval (one query, and
without persistent connections one new database connection, per stream), one
task per process updates all of the process's live streams in one UPDATE.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.utils import timezone

from . import db
from .conf import app_settings

__all__ = ["beat", "forget", "live_count"]

logger = logging.getLogger(__name__)

# Per process, like the sockets they describe: live stream ids and the one task.
_live: set[int] = set()
_task: asyncio.Task | None = None


def beat(stream_id: int) -> None:
    """Keep ``stream_id``'s heartbeat fresh while it is live in this process."""
    global _task
    _live.add(stream_id)
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_run(), name="mediastream-heartbeat")


def forget(stream_id: int) -> None:
    _live.discard(stream_id)


def live_count() -> int:
    """Admitted streams live in this process (the health check reports it)."""
    return len(_live)


async def _run() -> None:
    while _live:
        await asyncio.sleep(app_settings.STREAM_HEARTBEAT_SECONDS)
        try:
            await database_sync_to_async(_write)(list(_live))
            # The same tick closes the streams of processes that died without a teardown.
            await database_sync_to_async(db.reap_stale_streams)(
                stale_after=app_settings.STALE_STREAM_SECONDS, server_id=db.SERVER_ID
            )
        except Exception:
            logger.exception("Could not write the media stream heartbeat")


def _write(stream_ids: list[int]) -> None:
    from voicecall.models import MediaStream

    if stream_ids:
        MediaStream.objects.filter(pk__in=stream_ids, stopped_at__isnull=True).update(heartbeat_at=timezone.now())
