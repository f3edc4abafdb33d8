"""A stream's messages to its call's events group, sent in order by their own task.

The announcer must never wait on the channel layer: with Redis down a
``group_send`` fails only after its connection attempts, or hangs. So the
announcer hands messages over without awaiting; this task sends them, each
bounded by :data:`SEND_TIMEOUT`. A send that fails marks the layer down for
this stream: the messages of the next :data:`RETRY_AFTER` seconds are skipped
without trying (counted), then one is tried again. One rate-limited line when
the layer goes away, one when it is back with how many messages were skipped.

Most calls have no one following them. On channels_redis' Redis layer a
message for a group without members costs one round trip here (the expired
members dropped and the rest counted, in one script) instead of
``group_send``'s two; a group with members gets ``group_send`` as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from channels.layers import BaseChannelLayer

from .throttled import ThrottledLog

__all__ = ["GroupBroadcasts"]

logger = logging.getLogger(__name__)

#: Seconds one group_send may take before it counts as failed.
SEND_TIMEOUT = 2.0
#: After a failure, messages are skipped without trying for this many seconds (doubling up to the last).
RETRY_AFTER = (0.5, 1.0, 2.0, 5.0)
#: Messages waiting to be sent; past it the oldest is dropped (and counted as skipped).
MAX_QUEUED = 256

# What channels_redis' group_send does first (drop members older than the layer's group_expiry, then
# read the rest), answering only how many are left.
_COUNT_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""

_down_log = ThrottledLog(logger, "%(count)d more streams could not broadcast events in the last %(seconds).0fs")
_back_log = ThrottledLog(logger, "%(count)d more streams broadcast events again in the last %(seconds).0fs")


def _counts_members_first(layer: BaseChannelLayer) -> bool:
    """channels_redis' RedisChannelLayer with its own group_send (a subclass that overrides it gets every message)."""
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:
        return False
    return isinstance(layer, RedisChannelLayer) and type(layer).group_send is RedisChannelLayer.group_send


class GroupBroadcasts:
    def __init__(self, layer: BaseChannelLayer, group: str, label: str) -> None:
        self.layer = layer
        self._count_first = _counts_members_first(layer)
        self.group = group
        self.label = label
        self.sent = 0
        #: Of those sent, how many went to a group without members (nothing was delivered).
        self.unheard = 0
        self.skipped = 0
        self.down_since: float | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._retry_at = 0.0
        self._failures = 0

    def send(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the group; never blocks."""
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.skipped += 1
        self._queue.append(message)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"broadcasts:{self.label}")

    async def close(self, timeout: float) -> None:
        """Send what is queued (at most ``timeout`` seconds; skipped at once while the layer is down), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        await asyncio.wait({self._task}, timeout=timeout)
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.skipped += len(self._queue)
        self._queue.clear()
        if self.down_since is not None and self.skipped:
            logger.info("Stream %s ended with the events group unreachable: %d messages skipped", self.label, self.skipped)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            message = self._queue.popleft()
            if self.down_since is not None and (loop.time() < self._retry_at or self._closing):
                self.skipped += 1
                continue
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self._group_send(message)
            except Exception as exc:  # includes TimeoutError: Redis hangs
                self.skipped += 1
                self._failed(loop.time(), exc)
                continue
            self.sent += 1
            if self.down_since is not None:
                _back_log.warning(
                    "Stream %s: events group reachable again after %.1fs; %d messages were skipped",
                    self.label,
                    loop.time() - self.down_since,
                    self.skipped,
                )
                self.down_since = None
                self._failures = 0

    async def _group_send(self, message: dict[str, Any]) -> None:
        layer = self.layer
        if self._count_first:
            expired_before = int(time.time()) - layer.group_expiry
            key = layer._group_key(self.group)
            redis = layer.connection(layer.consistent_hash(self.group))
            members = await redis.eval(_COUNT_MEMBERS, 1, key, expired_before)
            if not members:
                self.unheard += 1
                return
        await layer.group_send(self.group, message)

    def _failed(self, now: float, exc: BaseException) -> None:
        self._retry_at = now + RETRY_AFTER[min(self._failures, len(RETRY_AFTER) - 1)]
        self._failures += 1
        if self.down_since is None:
            self.down_since = now
            _down_log.warning(
                "Stream %s: could not broadcast on its events group (%s: %s); events are skipped there until it answers",
                self.label,
                type(exc).__name__,
                " ".join(str(exc).split())[:120],
            )
