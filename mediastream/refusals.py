"""Refused and pre-start-closed sockets, logged as counts per reason instead of a line each.

Each such socket is also counted once in ``mediastream_refusals_total`` (by reason).

A flood of sockets that never start (or are refused at the handshake) must
not flood the log too. Per reason, the first few in an interval are logged in
full; the rest are counted and summed up in one line when the interval ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .metrics import REFUSALS
from .throttled import ThrottledLog

__all__ = ["RefusalLog", "refusals"]

logger = logging.getLogger(__name__)


class RefusalLog:
    """One :class:`~mediastream.throttled.ThrottledLog` per reason."""

    def __init__(
        self,
        *,
        interval: float = 10.0,
        burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._log = log
        self._by_reason: dict[str, ThrottledLog] = {}

    def note(self, reason: str, message: str, *args: object) -> None:
        """One refused socket: ``message % args`` is logged unless this reason was logged enough lately."""
        throttled = self._by_reason.get(reason)
        if throttled is None:
            summary = (
                "%(count)d more media stream sockets refused or closed before start in the last %(seconds).0fs: "
                + reason.replace("%", "%%")
            )
            throttled = ThrottledLog(self._log, summary, interval=self.interval, burst=self.burst, clock=self._clock)
            self._by_reason[reason] = throttled
        throttled.warning(message, *args)

    def refused(self, reason: str, message: str, *args: object) -> None:
        """A socket refused, or closed before its stream was admitted: counted by reason, and noted."""
        REFUSALS.labels(reason).inc()
        self.note(reason, message, *args)

    def flush(self) -> None:
        """Log the counts of what was not logged, and start new intervals."""
        for throttled in self._by_reason.values():
            throttled.flush()


#: This process's refusal log (one event loop, one set of sockets).
refusals = RefusalLog()
