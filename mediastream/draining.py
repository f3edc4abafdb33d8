"""Draining a process before it stops: no new streams, live calls finish within a grace period.

daphne stops its reactor on SIGTERM and SIGINT, and its "before shutdown"
trigger cancels every application at once (``kill_all_applications``, patched
in :mod:`mediastream.daphne_shutdown` to call :func:`drain` first). Twisted
waits for that trigger's Deferred before it closes the listening sockets, so
while :func:`drain` runs the process still serves: new media stream upgrades
are refused (403, logged as "server draining"), the health view answers 503 so
the load balancer stops sending calls, and live streams go on. When they have
all ended, or ``DRAIN_GRACE_SECONDS`` have passed, the remaining streams are
closed the ordinary way (4013 "Server shutting down" with a close frame to
Twilio, their rows and events written by their own teardown), and only then
are the applications left over cancelled. A second SIGTERM or SIGINT during the
grace ends it at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

__all__ = ["Drain", "drain", "draining"]

logger = logging.getLogger(__name__)

#: How long the streams closed at the end of the grace get for their teardown (rows, events, replies).
CLOSE_SECONDS = 5.0


class Drain:
    """This process's drain state and the streams it waits for (one event loop, one set of sockets)."""

    def __init__(self) -> None:
        self.active = False
        self._streams: dict[str, Callable[[], None]] = {}
        self._changed: asyncio.Event | None = None
        self._cut: asyncio.Event | None = None

    def add(self, conn_id: str, close: Callable[[], None]) -> None:
        """A stream of this process; ``close()`` closes it when the grace is over."""
        self._streams[conn_id] = close

    def discard(self, conn_id: str) -> None:
        if self._streams.pop(conn_id, None) is not None and self._changed is not None:
            self._changed.set()

    @property
    def streams(self) -> int:
        return len(self._streams)

    def cut_short(self) -> None:
        """End the grace now (a second signal)."""
        if self._cut is not None:
            self._cut.set()

    async def run(self, grace: float, close_seconds: float = CLOSE_SECONDS) -> None:
        """Stop admitting, wait up to ``grace`` seconds for the streams to end, then close the rest."""
        loop = asyncio.get_running_loop()
        self.active = True
        self._changed, self._cut = asyncio.Event(), asyncio.Event()
        logger.warning("Draining: %d media streams live, no new ones; the grace period is %.0fs", self.streams, grace)
        started = loop.time()
        await self._until_empty(started + grace)
        if self._streams:
            logger.warning(
                "Draining: grace over after %.1fs, closing the %d media streams left", loop.time() - started, self.streams
            )
            for close in list(self._streams.values()):
                close()
            self._cut.clear()
            await self._until_empty(loop.time() + close_seconds)
        logger.warning("Drained in %.1fs (%d media streams still open)", loop.time() - started, self.streams)

    async def _until_empty(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while self._streams and not self._cut.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._changed.clear()
            waits = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(self._cut.wait())]
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()


#: This process's drain.
draining = Drain()


async def drain() -> None:
    """Drain this process (the shutdown trigger calls it): a second SIGTERM or SIGINT cuts the grace short."""
    from .conf import app_settings

    loop = asyncio.get_running_loop()
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, lambda *_: loop.call_soon_threadsafe(draining.cut_short))
        except (ValueError, OSError):  # not the main thread (a test's server): no second-signal shortcut
            pass
    try:
        await draining.run(float(app_settings.DRAIN_GRACE_SECONDS))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
