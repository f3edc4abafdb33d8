"""The rows one stream owes the database, written in order and kept through a database outage.

The announcer hands each event's rows (event log, transcript, and last the
stream's end) to :class:`StreamRows` and goes on delivering the event (signal,
events group) whatever the database does. One task per stream writes the rows
in order, all that are waiting in one transaction. While the database is
unavailable (:mod:`mediastream.dbgate`) they wait in a bounded backlog and
are written when it answers again, also after the stream has ended (for
``keep_for`` seconds; teardown does not wait for that). Rows that cannot be
kept (the backlog is full, or the database stayed away too long) are logged:
one line per stream with the count and the first few, rate-limited.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from django.db import transaction

from voicecall.logsafe import sanitize

from . import db
from .dbgate import UNAVAILABLE, DatabaseGate, database
from .throttled import ThrottledLog

__all__ = ["Row", "StreamRows", "event_row", "transcript_row", "finish_row", "write_rows"]

logger = logging.getLogger(__name__)

#: Rows written in one transaction (one trip to the database thread).
BATCH_ROWS = 50
#: The first rows named in a "rows lost" line.
LOST_NAMED = 3

_lost_log = ThrottledLog(logger, "%(count)d more \"rows lost\" lines suppressed in the last %(seconds).0fs")


@dataclass(frozen=True, slots=True)
class Row:
    """One write a stream owes: ``write`` runs on the database thread; ``what`` names it if it is lost."""

    what: str
    write: Callable[[], object]


def event_row(call_id: int, stream_id: int, type: str, payload: dict) -> Row:
    payload = dict(payload)  # as announced: a signal receiver may change its copy before the row is written
    return Row(f"{type} {sanitize(repr(payload), 80)}", lambda: db.add_event(call_id, stream_id, type, payload))


def transcript_row(
    call_id: int,
    stream_id: int,
    *,
    speaker: str,
    text: str,
    interrupted: bool,
    start_ms: int | None,
    end_ms: int | None,
) -> Row:
    def write() -> int:
        return db.add_transcript(
            call_id, stream_id, speaker=speaker, text=text, interrupted=interrupted, start_ms=start_ms, end_ms=end_ms
        )

    return Row(f"{speaker} transcript {sanitize(repr(text), 60)}", write)


def finish_row(stream_id: int, *, close_code: int | None, close_reason: str, stats: dict) -> Row:
    """The stream's end (``db.finish_stream``): its close code, reason and stats, and the ``stream.stopped`` row."""

    def write() -> bool:
        return db.finish_stream(stream_id, close_code=close_code, close_reason=close_reason, stats=stats)

    return Row(f"stream end ({close_code} {sanitize(close_reason, 60)})", write)


def write_rows(writes: list[Callable[[], object]]) -> None:
    """Several rows, in order, in one transaction: all of them are written or none.

    One row is written on its own (an INSERT commits by itself: two round trips fewer).
    """
    if len(writes) == 1:
        writes[0]()
        return
    with transaction.atomic():
        for write in writes:
            write()


class StreamRows:
    """A stream's rows on their way to the database, oldest first."""

    def __init__(
        self, stream_sid: str, *, max_rows: int = 1000, keep_for: float = 60.0, gate: DatabaseGate = database
    ) -> None:
        self.stream_sid = stream_sid
        self.max_rows = max_rows
        self.keep_for = keep_for
        self.gate = gate
        self.written = 0
        self.lost = 0
        self._rows: deque[tuple[Row, asyncio.Future[bool]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._retrying = False  # the oldest row's last try failed: the database is away
        self._single = 0  # rows still to write one by one, to find one the database refuses
        self._give_up_at: float | None = None  # set when the stream ended
        self._lost_names: list[str] = []
        self._lost_why = ""

    @property
    def stalled(self) -> bool:
        """Rows are waiting for the database: a row added now will not be written soon."""
        return self._retrying or self.gate.down

    @property
    def backlog(self) -> int:
        return len(self._rows)

    def add(self, row: Row) -> asyncio.Future[bool]:
        """Queue ``row`` after the others.

        The future says how its first try went: True once written, False if it
        waits for the database (it is kept and written later) or was lost. While
        rows are waiting for the database it is False at once.
        """
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[bool] = loop.create_future()
        if self._give_up_at is not None or len(self._rows) >= self.max_rows:
            why = "the stream had ended" if self._give_up_at is not None else f"{self.max_rows} rows already waiting for the database"
            self._lose([row], why)
            outcome.set_result(False)
            return outcome
        self._rows.append((row, outcome))
        if self.stalled:
            outcome.set_result(False)
        self._wake.set()
        if self._task is None:
            self._task = loop.create_task(self._run(), name=f"stream-rows:{self.stream_sid}")
        return outcome

    async def close(self, timeout: float) -> bool:
        """The stream ended: wait at most ``timeout`` seconds for its rows (none while the database is away).

        Rows still waiting are retried in the background for ``keep_for``
        seconds, then logged as lost. True if every row was written.
        """
        loop = asyncio.get_running_loop()
        self._give_up_at = loop.time() + self.keep_for
        self._wake.set()
        task = self._task
        if task is None or task.done():
            self._report_lost()
            return not self._rows
        if not self.stalled:
            await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
            logger.info(
                "Stream %s ended with %d rows waiting for the database; they are retried for %.0fs",
                self.stream_sid,
                len(self._rows),
                self.keep_for,
            )
            return False
        return not self._rows

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if not self._rows:
                if self._give_up_at is not None:
                    self._report_lost()
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.gate.down or failures:
                self._stall()
                # Waits on the database; wakes at least each second to see whether the stream ended.
                left = None if self._give_up_at is None else self._give_up_at - loop.time()
                if left is not None and left <= 0:
                    self._give_up(f"the database was unavailable for {self.keep_for:.0f}s after the stream ended")
                    return
                if not await self.gate.wait_up(min(1.0, left) if left is not None else 1.0):
                    continue
                if failures:  # the database answers probes but refused the write: do not spin
                    await asyncio.sleep(min(0.05 * 2**failures, 2.0))
            batch = list(islice(self._rows, 1 if self._single else BATCH_ROWS))
            try:
                await self.gate.run(write_rows, [row.write for row, _ in batch])
            except UNAVAILABLE:
                failures += 1
                continue
            except Exception as exc:
                if len(batch) > 1:  # one of them is refused: write them one by one to find it
                    self._single = len(batch)
                    continue
                row, outcome = self._rows.popleft()
                if not outcome.done():
                    outcome.set_result(False)
                self._single = max(0, self._single - 1)
                self._lose([batch[0][0]], f"the database refused it ({type(exc).__name__}: {sanitize(str(exc), 120)})")
                continue
            failures = 0
            self._retrying = False
            for _ in batch:
                _, outcome = self._rows.popleft()
                if not outcome.done():
                    outcome.set_result(True)
            self.written += len(batch)
            self._single = max(0, self._single - len(batch))
            self._report_lost()  # the database answers again: say what it missed meanwhile

    def _stall(self) -> None:
        """The database is away: whoever waits on a row's first try hears "kept for later" now."""
        self._retrying = True
        for _, outcome in self._rows:
            if not outcome.done():
                outcome.set_result(False)

    def _give_up(self, why: str) -> None:
        rows = [row for row, _ in self._rows]
        self._rows.clear()
        self._lose(rows, why)
        self._report_lost()

    def _lose(self, rows: list[Row], why: str) -> None:
        self.lost += len(rows)
        self._lost_why = why
        self._lost_names.extend(row.what for row in rows[: max(0, LOST_NAMED - len(self._lost_names))])
        if self._give_up_at is not None or self._task is None:
            self._report_lost()

    def _report_lost(self) -> None:
        """One line for the rows lost so far (named: the first few), then start counting again."""
        if not self.lost:
            return
        more = self.lost - len(self._lost_names)
        _lost_log.warning(
            "Stream %s: %d row(s) lost, %s: %s%s",
            self.stream_sid,
            self.lost,
            self._lost_why,
            "; ".join(self._lost_names),
            f"; and {more} more" if more > 0 else "",
        )
        self.lost = 0
        self._lost_names = []


#: Row writers of ended streams still waiting for the database (kept referenced until they finish).
_BACKGROUND: set[asyncio.Task] = set()
