"""The stream database work of a process: a few threads of its own, and whether the database answers.

Admissions and stream rows are short, self-contained transactions. On
``database_sync_to_async``'s one thread (shared with everything else that uses
it) they queue behind each other, each waiting out its round trips to
PostgreSQL: a ramp of new calls then waits seconds for admission. So they run
on :data:`THREADS` threads of their own (each with its own connection, handed
back to the pool after each call), and a stream's rows stay in order because
each stream writes one batch at a time.

While the database is unreachable each attempt costs as long as a connection
attempt takes, so hundreds of streams retrying on their own would queue the
process's recovery behind their attempts. Instead, the first failure that
says the database cannot be reached (``OperationalError``, ``InterfaceError``)
marks it down with one warning; while it is down :meth:`DatabaseGate.run`
fails at once with :class:`DatabaseUnavailable` and one task probes it with
backoff. When a probe answers, one line says how long it was away and every
caller of :meth:`DatabaseGate.wait_up` goes on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connection

__all__ = ["UNAVAILABLE", "DatabaseUnavailable", "DatabaseGate", "database"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The errors that mean "the database cannot be reached now", as opposed to "this write is wrong".
UNAVAILABLE = (OperationalError, InterfaceError)

#: Seconds between probes while the database is down; the last one repeats.
PROBE_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)
#: Threads for stream database work (each holds a connection only during a call); one on SQLite,
#: which takes one writer at a time.
THREADS = 4


class DatabaseUnavailable(OperationalError):
    """Raised without trying, while the database is known to be down."""


def _probe() -> None:
    """Ask the database something; with a connection pool, on a connection of the probe's own.

    The pool's own reconnection attempts back off (doubling) while the
    database is away, so it would lag the database's return by up to as long
    again as the outage: once the probe is answered, the pool starts afresh.
    """
    if getattr(connection, "pool", None) is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return
    with connection.wrap_database_errors:  # psycopg's errors as Django's (UNAVAILABLE)
        raw = connection.Database.connect(**connection.get_connection_params())
        try:
            raw.execute("SELECT 1")
        finally:
            raw.close()
    # The next connection comes from a new pool; the old one is closed without
    # waiting (connections still out are closed when they are handed back).
    stale = connection._connection_pools.pop(connection.alias, None)
    if stale is not None:
        stale.close(timeout=0)


def _call(fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    """``fn`` on a database thread, with Django's connection upkeep around it (as for a request)."""
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


class DatabaseGate:
    """This process's view of its database; state belongs to the running event loop."""

    def __init__(
        self, probe: Callable[[], None] = _probe, backoff: Sequence[float] = PROBE_BACKOFF, threads: int = THREADS
    ) -> None:
        self._probe = probe
        self._backoff = tuple(backoff)
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self.down_since: float | None = None
        self.outages = 0
        self._up = asyncio.Event()
        self._prober: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def down(self) -> bool:
        self._bind()
        return self.down_since is not None

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a stream database thread; :class:`DatabaseUnavailable` at once while it is down."""
        if self.down:
            raise DatabaseUnavailable("the database is unavailable; a probe is under way")
        try:
            return await self._in_thread(fn, *args, **kwargs)
        except UNAVAILABLE as exc:
            self.failed(exc)
            raise

    async def wait_up(self, timeout: float | None = None) -> bool:
        """Wait until the database answers again: True, or False after ``timeout`` seconds."""
        if not self.down:
            return True
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def failed(self, exc: BaseException) -> None:
        """``exc`` says the database cannot be reached: mark it down and probe it (once per outage)."""
        if self.down:
            return
        loop = asyncio.get_running_loop()
        self.down_since = loop.time()
        self.outages += 1
        self._up.clear()
        logger.warning(
            "Database unavailable (%s: %s); stream events are still delivered and their rows kept, "
            "new streams are refused with 4013 until it answers",
            type(exc).__name__,
            " ".join(str(exc).split())[:200],
        )
        self._prober = loop.create_task(self._probe_until_up(), name="database-probe")

    async def _probe_until_up(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        odd: type | None = None
        while True:
            await asyncio.sleep(self._backoff[min(attempt, len(self._backoff) - 1)])
            attempt += 1
            try:
                await self._in_thread(self._probe)
            except UNAVAILABLE:  # still unreachable: keep probing
                continue
            except Exception as exc:  # not an outage: say so (once per kind), keep probing
                if type(exc) is not odd:
                    odd = type(exc)
                    logger.warning("Database probe failed (%s: %s)", type(exc).__name__, " ".join(str(exc).split())[:200])
                continue
            break
        outage = loop.time() - (self.down_since or loop.time())
        self.down_since = None
        self._up.set()
        logger.warning("Database back after %.1fs (%d probes)", outage, attempt)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            threads = 1 if connection.vendor == "sqlite" else self._threads
            self._executor = ThreadPoolExecutor(threads, thread_name_prefix="mediastream-db")
        call = functools.partial(contextvars.copy_context().run, _call, fn, args, kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _bind(self) -> None:
        """State from another event loop (a test's earlier loop) means nothing in this one."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._up = asyncio.Event()
            self._up.set()
            self.down_since = None
            self._prober = None


#: This process's database (the ``default`` alias the stream rows use).
database = DatabaseGate()
