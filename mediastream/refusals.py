"""Refused and pre-start-closed sockets, logged as counts per reason instead of a line each.

A flood of sockets that never start (or are refused at the handshake) must
not flood the log too. Per reason, the first few in an interval are logged in
full; the rest are counted and summed up in one line when the interval ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["RefusalLog", "refusals"]

logger = logging.getLogger(__name__)


class RefusalLog:
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
        self._started = clock()
        self._logged: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()
        self._flush_scheduled = False

    def note(self, reason: str, message: str, *args: object) -> None:
        """One refused socket: ``message % args`` is logged unless this reason was logged enough lately."""
        self._roll()
        if self._logged[reason] < self.burst:
            self._logged[reason] += 1
            self._log.warning(message, *args)
            return
        self._suppressed[reason] += 1
        self._schedule_flush()

    def flush(self) -> None:
        """Log the counts of what was not logged, and start a new interval."""
        if self._suppressed:
            total = sum(self._suppressed.values())
            counts = ", ".join(f"{reason}: {count}" for reason, count in self._suppressed.most_common())
            self._log.warning(
                "%d more media stream sockets refused or closed before start in the last %.0fs (%s)",
                total,
                self._clock() - self._started,
                counts,
            )
        self._started = self._clock()
        self._logged.clear()
        self._suppressed.clear()

    def _roll(self) -> None:
        if self._clock() - self._started >= self.interval:
            self.flush()

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (e.g. a pure test): the next note rolls the interval over
            return
        self._flush_scheduled = True
        delay = max(0.0, self.interval - (self._clock() - self._started))
        loop.call_later(delay, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._roll()


#: This process's refusal log (one event loop, one set of sockets).
refusals = RefusalLog()
