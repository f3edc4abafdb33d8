"""A stream's link to the channel layer that survives the layer going away.

The channel layer (Redis in production) carries only the control plane:
commands from ``mediastream.api`` and replies. It must never take the audio
path down with it. When a receive fails, the link waits with backoff, joins
its groups again (a restarted Redis has forgotten them; the join is also the
probe that Redis is back), and goes on receiving. A group join that fails at
admission is retried the same way. One warning per outage, one line when it
is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.layers import BaseChannelLayer

__all__ = ["LayerLink"]

logger = logging.getLogger(__name__)

#: Backoff between attempts while the layer is down (seconds): doubles up to the last.
BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)


class LayerLink:
    def __init__(self, layer: BaseChannelLayer, channel: str, label: Callable[[], str]) -> None:
        self.layer = layer
        self.channel = channel
        self._label = label
        self.groups: set[str] = set()
        self.down_since: float | None = None
        self._rejoin: asyncio.Task | None = None

    async def receive(self) -> dict[str, Any]:
        """The next message for this channel; waits out layer outages instead of raising."""
        while True:
            try:
                return await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(exc)
                await self._recover()

    async def join(self, group: str) -> None:
        """Join ``group`` now, or as soon as the layer is back."""
        self.groups.add(group)
        try:
            await self.layer.group_add(group, self.channel)
        except Exception as exc:
            self._lost(exc)
            if self._rejoin is None or self._rejoin.done():
                self._rejoin = asyncio.create_task(self._recover(), name=f"layer-rejoin:{self._label()}")

    async def leave(self) -> None:
        """Leave every group (teardown); a layer that is down has nothing to leave."""
        if self._rejoin is not None:
            self._rejoin.cancel()
            await asyncio.gather(self._rejoin, return_exceptions=True)
        groups, self.groups = self.groups, set()
        for group in groups:
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception as exc:
                logger.info("Stream %s: could not leave %s (%s)", self._label(), group, type(exc).__name__)

    def _lost(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = asyncio.get_running_loop().time()
            logger.warning(
                "Stream %s: channel layer unavailable (%s: %s); audio goes on, commands resume when it is back",
                self._label(),
                type(exc).__name__,
                str(exc)[:120],
            )

    async def _recover(self) -> None:
        """Wait until the layer answers again, joining every group on the way."""
        attempt = 0
        while True:
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1
            try:
                for group in list(self.groups):
                    await self.layer.group_add(group, self.channel)
                if not self.groups:
                    await self.layer.group_discard("mediastream.probe", self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            if self.down_since is not None:
                outage = asyncio.get_running_loop().time() - self.down_since
                logger.warning("Stream %s: channel layer back after %.1fs; groups joined again", self._label(), outage)
                self.down_since = None
            return
