"""Closing streams left open by a process that died.

A killed daphne never runs its teardown, so its streams would look live
forever. Each process reaps once when it serves its first media stream
(streams of dead processes on this host, and streams whose heartbeat
stopped), and ``manage.py reap_streams`` does the same from cron or by hand.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from . import records
from .conf import app_settings

__all__ = ["reap_on_startup"]

logger = logging.getLogger(__name__)

# Once per process: the set holds the one startup task (a strong reference).
_startup_tasks: set[asyncio.Task] = set()
_started = False


def reap_on_startup() -> None:
    """Start the startup reap in the background, the first time only."""
    global _started
    if _started:
        return
    _started = True
    task = asyncio.create_task(_reap(), name="mediastream-startup-reaper")
    _startup_tasks.add(task)
    task.add_done_callback(_startup_tasks.discard)


async def _reap() -> None:
    try:
        await database_sync_to_async(records.reap_stale_streams)(
            stale_after=app_settings.STALE_STREAM_SECONDS, server_id=records.SERVER_ID
        )
    except Exception:
        logger.exception("Startup reap of stale media streams failed")
