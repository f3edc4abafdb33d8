"""What vendor TTS backends over HTTPS share: a pooled client, streaming, error wording.

A subclass names its vendor, builds the request, and says how to read the
vendor's error JSON; :meth:`HTTPTTSBackend.stream` yields the response body as
it arrives and turns every failure into a :class:`TTSError` whose message is
one short line with the API key blanked out.

The connection pool belongs to the event loop that opened it, so closing it
from elsewhere (``close()`` from a ``setting_changed`` receiver or at exit)
runs the pool's ``aclose()`` on that loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx

from voicecall.logsafe import sanitize

from .base import BaseTTSBackend, TTSError

__all__ = ["HTTPTTSBackend"]

MAX_ERROR_CHARS = 200

# Strong references to pool closes scheduled on the running loop, until they finish.
_closing: set[asyncio.Task] = set()


class HTTPTTSBackend(BaseTTSBackend):
    #: Shown in error messages, e.g. "OpenAI TTS".
    vendor = "TTS"

    def __init__(self, *, api_key: str, timeout: float) -> None:
        super().__init__()
        self.api_key = api_key
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    async def stream(self, url: str, *, json_body: dict[str, Any], headers: dict[str, str], params=None) -> AsyncIterator[bytes]:
        """POST ``json_body`` and yield the response body in chunks as they arrive."""
        try:
            async with self._http().stream("POST", url, params=params, json=json_body, headers=headers) as response:
                if response.status_code >= 400:
                    message = self.clean(self.error_detail(await response.aread()))
                    raise TTSError(
                        f"{self.vendor} returned HTTP {response.status_code}: "
                        f"{message or response.reason_phrase or 'no error message'}"
                    )
                async for data in response.aiter_bytes():
                    if data:
                        yield data
        except httpx.TimeoutException as exc:
            raise TTSError(f"{self.vendor} timed out ({type(exc).__name__}, limit {self.timeout:g}s)") from None
        except httpx.HTTPError as exc:
            raise TTSError(f"{self.vendor} request failed: {type(exc).__name__}: {self.clean(str(exc))}") from None

    def error_detail(self, raw: bytes) -> str:
        """The vendor's own words from an error body; subclasses read their JSON shape."""
        return raw.decode("utf-8", "replace")

    @staticmethod
    def json_body(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def clean(self, text: str) -> str:
        """One short printable line, with our own key blanked out should the vendor echo it."""
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return sanitize(text, MAX_ERROR_CHARS)

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

    def _http(self) -> httpx.AsyncClient:
        # Connections belong to the loop that opened them; a new loop gets a new pool.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
            self._client_loop = loop
        return self._client


def close_on_loop(loop: asyncio.AbstractEventLoop, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``close()`` on ``loop`` without waiting for it; a closed loop took its connections with it."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        task = loop.create_task(close(), name="mediastream-tts-http-close")
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(close(), loop)
    # A loop that is neither running nor closed runs nothing: the pool goes with the client.
