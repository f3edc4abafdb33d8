"""An httpx connection pool that belongs to the event loop that opened it.

Vendor backends (TTS over HTTPS, chat models) keep one pooled client. Its
connections belong to the loop that opened them, so a new loop gets a new
pool, and closing it from elsewhere (``close()`` from a ``setting_changed``
receiver or at exit) runs the pool's ``aclose()`` on that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

__all__ = ["LoopBoundPool", "close_on_loop"]

# Strong references to pool closes scheduled on the running loop, until they finish.
_closing: set[asyncio.Task] = set()


class LoopBoundPool:
    """Mixin: ``_http()`` is the client of the running loop (``self.timeout`` seconds); ``close``/``aclose`` drop it."""

    timeout: float
    _client: httpx.AsyncClient | None = None
    _client_loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
            self._client_loop = loop
        return self._client

    def close(self) -> None:
        """Drop the connection pool; its connections close on the loop that opened them."""
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None and loop is not None:
            close_on_loop(loop, client.aclose)

    async def aclose(self) -> None:
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is None or loop is None:
            return
        if loop is asyncio.get_running_loop():
            await client.aclose()
        else:
            close_on_loop(loop, client.aclose)


def close_on_loop(loop: asyncio.AbstractEventLoop, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``close()`` on ``loop`` without waiting for it; a closed loop took its connections with it."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        task = loop.create_task(close(), name="mediastream-http-pool-close")
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(close(), loop)
    # A loop that is neither running nor closed runs nothing: the pool goes with the client.
