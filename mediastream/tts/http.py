"""What vendor TTS backends over HTTPS share: a pooled client, streaming, error wording.

A subclass names its vendor, builds the request, and says how to read the
vendor's error JSON; :meth:`HTTPTTSBackend.stream` yields the response body as
it arrives and turns every failure into a :class:`TTSError` whose message is
one short line with the API key blanked out.

The connection pool is a :class:`~mediastream.httppool.LoopBoundPool`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voicecall.logsafe import sanitize

from ..httppool import LoopBoundPool
from .base import BaseTTSBackend, TTSError

__all__ = ["HTTPTTSBackend"]

MAX_ERROR_CHARS = 200

class HTTPTTSBackend(LoopBoundPool, BaseTTSBackend):
    #: Shown in error messages, e.g. "OpenAI TTS".
    vendor = "TTS"

    def __init__(self, *, api_key: str, timeout: float) -> None:
        super().__init__()
        self.api_key = api_key
        self.timeout = timeout

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
