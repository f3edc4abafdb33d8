"""Work a process does once, when it serves its first media stream.

* Reap streams left open by a process that died: a killed daphne never runs
  its teardown, so its streams would look live forever (``manage.py
  reap_streams`` does the same from cron or by hand).
* Warm up the speech backends (start the TTS worker, load the STT and VAD
  models) so the first caller does not wait for them.

Both run in the background; a failure is logged and the call goes on.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from . import db
from .conf import app_settings
from .dbgate import UNAVAILABLE

__all__ = ["on_first_connection"]

logger = logging.getLogger(__name__)

# Once per process: the set holds strong references to the startup tasks.
_tasks: set[asyncio.Task] = set()
_started = False


def on_first_connection() -> None:
    """Start the once-per-process work in the background, the first time only."""
    global _started
    if _started:
        return
    _started = True
    for coro, name in ((_reap(), "reaper"), (_warm_up(), "warm-up")):
        task = asyncio.create_task(coro, name=f"mediastream-startup-{name}")
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


async def _reap() -> None:
    try:
        await database_sync_to_async(db.reap_stale_streams)(
            stale_after=app_settings.STALE_STREAM_SECONDS, server_id=db.SERVER_ID
        )
    except UNAVAILABLE as exc:  # mediastream.preflight has said so at startup, in one line
        logger.warning(
            "Startup reap of stale media streams skipped: the database is unavailable (%s)", str(exc).strip()[:160]
        )
    except Exception:
        logger.exception("Startup reap of stale media streams failed")


async def _warm_up() -> None:
    from .backends import backends
    from .vad import preload

    try:
        await asyncio.to_thread(preload)
    except Exception:
        logger.exception("Warming up the VAD backend failed; it will be retried on first use")
    for kind in backends.kinds():
        try:
            backend = backends.get(kind)
            if backend is not None:
                await backend.warm_up()
        except Exception:
            logger.exception("Warming up the %s backend failed; it will be retried on first use", kind.name)
    try:
        from .endofturn import get_end_of_turn

        await asyncio.to_thread(get_end_of_turn)  # the optional end-of-turn model (None without one)
    except Exception as exc:
        logger.warning("Loading the end-of-turn model failed; turns will end on silence only: %s", exc)
