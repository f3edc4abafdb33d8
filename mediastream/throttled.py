"""Log lines of one kind at a bounded rate: the first few per interval in full, the rest as one count.

An outage touches every stream of a process at once (hundreds of "broadcast
failed" or "rows lost" lines in the same second); the log must stay readable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["ThrottledLog"]


class ThrottledLog:
    """``warning()`` logs at most ``burst`` lines per ``interval``; the rest are summed up when it ends.

    ``summary`` is the line for the suppressed ones, formatted with ``count``
    and ``seconds`` (e.g. ``"%(count)d more streams lost rows in %(seconds).0fs"``).
    """

    def __init__(
        self,
        log: logging.Logger,
        summary: str,
        *,
        interval: float = 10.0,
        burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._summary = summary
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._started = clock()
        self._logged = 0
        self.suppressed = 0
        self._flush_scheduled = False

    def warning(self, message: str, *args: object) -> None:
        self._roll()
        if self._logged < self.burst:
            self._logged += 1
            self._log.warning(message, *args)
            return
        self.suppressed += 1
        self._schedule_flush()

    def flush(self) -> None:
        """Log the count of what was suppressed, and start a new interval."""
        if self.suppressed:
            self._log.warning(self._summary, {"count": self.suppressed, "seconds": self._clock() - self._started})
        self._started = self._clock()
        self._logged = 0
        self.suppressed = 0

    def _roll(self) -> None:
        if self._clock() - self._started >= self.interval:
            self.flush()

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next line rolls the interval over
            return
        self._flush_scheduled = True
        loop.call_later(max(0.0, self.interval - (self._clock() - self._started)), self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._roll()
