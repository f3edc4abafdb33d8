"""The tasks one stream spawns: named after the stream, logged when they fail, all ended at teardown.

Replies owed to callers waiting on ``speak()`` are kept apart: teardown waits
for them (bounded) instead of cancelling them, so those callers hear
"interrupted" rather than time out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["StreamTasks"]

logger = logging.getLogger(__name__)

#: Failed tasks logged with their traceback per stream; the rest are counted.
MAX_FAILURES_LOGGED = 5


class StreamTasks:
    def __init__(self, label: Callable[[], str]) -> None:
        #: Names the stream in task names and log lines.
        self.label = label
        self._tasks: set[asyncio.Task] = set()
        self._replies: set[asyncio.Task] = set()
        self.failures = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *, reply: bool = False) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{name}:{self.label()}")
        self._tasks.add(task)
        if reply:
            self._replies.add(task)
        task.add_done_callback(self._done)
        return task

    async def finish(self, reply_timeout: float) -> None:
        """Let owed replies go out (at most ``reply_timeout`` seconds), then cancel the rest."""
        pending = {task for task in self._replies if not task.done()}
        if pending:
            await asyncio.wait(pending, timeout=reply_timeout)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.failures > MAX_FAILURES_LOGGED:
            logger.error("Stream %s: %d more tasks failed (not logged)", self.label(), self.failures - MAX_FAILURES_LOGGED)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._replies.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            if self.failures <= MAX_FAILURES_LOGGED:  # e.g. every reply while the channel layer is down
                logger.error("Task %s failed", task.get_name(), exc_info=task.exception())
