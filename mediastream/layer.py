"""A stream's link to the channel layer that survives the layer going away.

The channel layer (Redis in production) carries only the control plane:
commands from ``mediastream.api`` and replies. It must never take the audio
path down with it. The link says where the stream listens
(``mediastream.directory``) and keeps saying it every heartbeat. When a receive
fails, the link waits with backoff, registers the stream again (a restarted
Redis has forgotten it; the write is also the probe that Redis is back), and
goes on receiving. A registration that fails at admission is retried the same
way. One warning per outage, one line when it is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.layers import BaseChannelLayer

from .conf import app_settings
from .directory import for_layer

__all__ = ["LayerLink"]

logger = logging.getLogger(__name__)

#: Backoff between attempts while the layer is down (seconds): doubles up to the last.
BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)


class LayerLink:
    def __init__(self, layer: BaseChannelLayer, channel: str, label: Callable[[], str]) -> None:
        self.layer = layer
        self.channel = channel
        self._label = label
        self.directory = for_layer(layer)
        self.call_sid: str | None = None
        self.down_since: float | None = None
        self._recovery: asyncio.Task | None = None
        self._refresh: asyncio.Task | None = None

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

    async def register(self, call_sid: str) -> None:
        """Make the stream reachable as ``call_sid``'s now, or as soon as the layer is back."""
        self.call_sid = call_sid
        try:
            await self._register()
        except Exception as exc:
            self._lost(exc)
            if self._recovery is None or self._recovery.done():
                self._recovery = asyncio.create_task(self._recover(), name=f"layer-register:{self._label()}")
        if self._refresh is None and self.directory.shared:
            self._refresh = asyncio.create_task(self._keep_registered(), name=f"layer-refresh:{self._label()}")

    async def leave(self) -> None:
        """Unregister (teardown); a layer that is down has nothing to forget, and the key expires."""
        for task in (self._recovery, self._refresh):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        call_sid, self.call_sid = self.call_sid, None
        if call_sid is None:
            return
        try:
            await self.directory.unregister(call_sid, self.channel)
        except Exception as exc:  # the local entry is gone already; the key expires
            logger.info("Stream %s: could not unregister (%s)", self._label(), type(exc).__name__)

    async def _register(self) -> None:
        if self.call_sid is not None:
            await self.directory.register(self.call_sid, self.channel, app_settings.STALE_STREAM_SECONDS)

    async def _keep_registered(self) -> None:
        """The key expires unless refreshed: a process that dies leaves no stale entry for long."""
        while True:
            await asyncio.sleep(app_settings.STREAM_HEARTBEAT_SECONDS)
            try:
                await self._register()
            except Exception as exc:  # the receive loop or the recovery brings it back
                self._lost(exc)

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
        """Wait until the layer answers again, registering the stream on the way."""
        attempt = 0
        while True:
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1
            try:
                if self.call_sid is not None:
                    await self._register()
                else:
                    await self.layer.group_discard("mediastream.probe", self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            if self.down_since is not None:
                outage = asyncio.get_running_loop().time() - self.down_since
                logger.warning("Stream %s: channel layer back after %.1fs; stream registered again", self._label(), outage)
                self.down_since = None
            return
