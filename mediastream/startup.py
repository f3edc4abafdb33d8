"""Work a process does once.

* Reap streams left open by a process that died: a killed daphne never runs
  its teardown, so its streams would look live forever (``manage.py
  reap_streams`` does the same from cron or by hand). At the first media stream.
* Warm up the speech backends (start the TTS worker, load the STT and VAD
  models) so the first caller does not wait for them. As soon as daphne serves
  ``mediastream.asgi`` (:func:`start_when_serving`), else at the first stream.

Both run in the background; a failure is logged and the call goes on.
:func:`prepare` (also called by ``mediastream.asgi``, as it loads) imports
and builds what the first stream would otherwise import on the event loop.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from . import db
from .conf import app_settings
from .dbgate import UNAVAILABLE

__all__ = ["call_when_serving", "on_first_connection", "prepare", "start_when_serving"]

logger = logging.getLogger(__name__)

# Once per process: the set holds strong references to the startup tasks.
_tasks: set[asyncio.Task] = set()
_reaped = False
_warming = False


def prepare() -> None:
    """Import and build now what the first stream of the process would on the event loop.

    The channel layer (its backend, Redis client and serializer: about eighty
    modules), the conversation engines and the end-of-turn module: at the first
    call that was tens of milliseconds during which no stream of the process
    was served. Builds no connection. A channel layer that cannot be built is
    left to ``mediastream.preflight`` to report (one line naming
    ``CHANNEL_LAYERS``); the server still starts and serves HTTP.
    """
    from channels.layers import get_channel_layer

    from . import endofturn  # noqa: F401
    from .agents import engine, speech_engine  # noqa: F401

    try:
        get_channel_layer()
    except Exception:
        pass


def start_when_serving() -> None:
    """Warm the speech backends up as soon as daphne's reactor runs, before any call comes in.

    Never in a process that only imports the application (a test, ``manage.py
    check``); without daphne the first connection starts it. The reap waits
    for the first stream: a server started while its database is away must
    not start the connection pool's own retries (``mediastream.preflight``
    has said so in one line).
    """
    call_when_serving(_start_warm_up)


def call_when_serving(callback) -> bool:
    """Call ``callback`` on the event loop once daphne's reactor runs; False (never called) without daphne."""
    try:
        import daphne.server  # noqa: F401  (installs the reactor daphne runs)
        from twisted.internet import reactor
    except ImportError:
        return False
    # The startup triggers fire before the asyncio loop runs; callLater waits for it to run.
    reactor.callWhenRunning(lambda: reactor.callLater(0, callback))
    return True


def on_first_connection() -> None:
    """Start the once-per-process work in the background, the first time only."""
    global _reaped
    if not _reaped:
        _reaped = True
        _background(_reap(), "reaper")
    _start_warm_up()


def _start_warm_up() -> None:
    global _warming
    if not _warming:
        _warming = True
        _background(_warm_up(), "warm-up")


def _background(coro, name: str) -> None:
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
