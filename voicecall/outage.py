"""The webhooks' answer while the database cannot serve them: 503 with Retry-After, logged at a bounded rate.

A webhook that cannot reach the database (psycopg's pool timed out waiting
for a connection, which Django raises as ``OperationalError``; the server
refusing or dropping connections; a session that died, ``InterfaceError``)
changed nothing: the receipt and the handler's rows are one transaction.
For Twilio a 5xx is a failed webhook (it goes to the fallback URL, or is
retried where the URL's connection overrides ask for that), so 503 "Service
Unavailable" is the honest answer; a 500 would claim a bug and print a
traceback for each request. Any other database error (a missing table, a
statement timeout, a deadlock) is not an outage and stays a 500 with its
traceback (:func:`is_outage`). During an outage every webhook of every call fails at once, so the
log gets one line per interval, then one line counting the rest.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from .conf import voicecall_settings
from .logsafe import sanitize

__all__ = ["UNAVAILABLE", "OutageLog", "is_outage", "retry_after_seconds", "unavailable_response"]

logger = logging.getLogger(__name__)

#: What Django raises when the database cannot serve a query now (PoolTimeout is an OperationalError);
#: :func:`is_outage` tells an outage from the other errors of these classes.
UNAVAILABLE = (OperationalError, InterfaceError)
#: SQLSTATEs of a server that cannot take the query: class 08 (connection exception), shutting down or
#: starting (57P01-57P03), too many connections (53300).
_OUTAGE_SQLSTATES = ("57P01", "57P02", "57P03", "53300")
#: SQLite's "database is busy / locked" result codes (the primary code is the low byte).
_SQLITE_BUSY = (5, 6)


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` (one of :data:`UNAVAILABLE`) says the database is away, not that the query is wrong."""
    if isinstance(error, InterfaceError):
        return True
    cause = error.__cause__
    if cause is None or type(cause).__name__ == "PoolTimeout":
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in _OUTAGE_SQLSTATES
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_BUSY
    return True  # a driver error without a code: the connection failed or was lost


def retry_after_seconds() -> int:
    """``VOICECALL["DATABASE_RETRY_AFTER_SECONDS"]`` as the header's whole seconds (at least 1)."""
    return max(1, math.ceil(voicecall_settings.DATABASE_RETRY_AFTER_SECONDS))


class OutageLog:
    """One warning when webhooks start failing, one per ``interval`` counting them, one when they pass again.

    Webhooks run on threads of their own, so the counters are under a lock;
    a webhook that passes while no outage is known reads one attribute.
    """

    def __init__(self, log: logging.Logger, *, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._log = log
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None  # the first failure of this outage
        self._logged = 0.0  # the last line's time
        self._failed = 0  # since the last line

    def failed(self, request: HttpRequest, error: BaseException) -> None:
        now = self._clock()
        with self._lock:
            first = self._started is None
            if not first and now - self._logged < self.interval:
                self._failed += 1
                return
            failed, self._failed = self._failed, 0
            since = now - self._logged
            if first:
                self._started = now
            self._logged = now
        if failed:
            self._log.warning(
                "%d more Twilio webhooks answered 503 (database unavailable) in the last %.0fs", failed, since
            )
        cause = error.__cause__ or error
        self._log.warning(
            "Database unavailable for Twilio webhook %s (%s: %s): answering 503, Retry-After %ss",
            sanitize(request.path),
            type(cause).__name__,
            sanitize(str(cause), 200),
            retry_after_seconds(),
        )

    def passed(self) -> None:
        """A webhook reached its database again: end the outage with one line."""
        if self._started is None:
            return
        with self._lock:
            if self._started is None:
                return
            seconds, failed = self._clock() - self._started, self._failed
            self._started, self._failed = None, 0
        self._log.warning(
            "Database available again for Twilio webhooks after %.1fs (%d more answered 503 since the last line)",
            seconds,
            failed,
        )


outage_log = OutageLog(logger)


def unavailable_response(request: HttpRequest, error: BaseException) -> HttpResponse:
    """503 with ``Retry-After`` (``VOICECALL["DATABASE_RETRY_AFTER_SECONDS"]``), logged through :data:`outage_log`."""
    outage_log.failed(request, error)
    response = HttpResponse("Service Unavailable: database unavailable", status=503, content_type="text/plain")
    response["Retry-After"] = str(retry_after_seconds())
    # Django logs every 5xx as an error line per request; the outage log above is the only one.
    response._has_been_logged = True
    return response
