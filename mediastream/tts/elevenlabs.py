"""ElevenLabs text-to-speech (``POST /v1/text-to-speech/{voice_id}/stream``).

The request asks for ``output_format=ulaw_8000``: G.711 mu-law at 8 kHz,
exactly what Twilio plays, so the audio passes through with no resampling and
each network chunk is playable as it arrives.

Options (``MEDIASTREAM["TTS"]["OPTIONS"]``): ``VOICE_ID`` (required),
``API_KEY`` (default: the ``ELEVENLABS_API_KEY`` environment variable),
``MODEL_ID`` (``eleven_flash_v2_5``, the low-latency model), ``BASE_URL``
(``https://api.elevenlabs.io``), ``VOICE_SETTINGS`` (a dict sent as
``voice_settings``, e.g. ``{"stability": 0.5}``), ``TIMEOUT`` (seconds for
connecting and between chunks, 30).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from django.core.exceptions import ImproperlyConfigured

from .base import AudioChunk, BaseTTSBackend, TTSError

__all__ = ["ElevenLabsBackend"]

logger = logging.getLogger(__name__)

OUTPUT_FORMAT = "ulaw_8000"
_MAX_ERROR_CHARS = 200


class ElevenLabsBackend(BaseTTSBackend):
    """Streaming ElevenLabs TTS in Twilio's own format, one pooled client per event loop."""

    def __init__(
        self,
        *,
        VOICE_ID: str | None = None,
        API_KEY: str | None = None,
        MODEL_ID: str = "eleven_flash_v2_5",
        BASE_URL: str = "https://api.elevenlabs.io",
        VOICE_SETTINGS: dict[str, Any] | None = None,
        TIMEOUT: float = 30.0,
    ) -> None:
        super().__init__()
        if not VOICE_ID:
            raise ImproperlyConfigured(
                'ElevenLabsBackend needs a voice: set MEDIASTREAM["TTS"]["OPTIONS"]["VOICE_ID"] '
                "(see GET /v1/voices in your ElevenLabs account)."
            )
        self.api_key = API_KEY or os.environ.get("ELEVENLABS_API_KEY", "")
        if not self.api_key:
            raise ImproperlyConfigured(
                "ElevenLabsBackend needs an API key: set "
                'MEDIASTREAM["TTS"]["OPTIONS"]["API_KEY"] or the ELEVENLABS_API_KEY environment variable.'
            )
        self.voice_id = VOICE_ID
        self.url = f"{BASE_URL.rstrip('/')}/v1/text-to-speech/{quote(VOICE_ID, safe='')}/stream"
        self.model_id = MODEL_ID
        self.voice_settings = VOICE_SETTINGS
        self.timeout = TIMEOUT
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def request_body(self, text: str) -> dict[str, Any]:
        """The JSON body of one speech request."""
        body: dict[str, Any] = {"text": text, "model_id": self.model_id}
        if self.voice_settings:
            body["voice_settings"] = self.voice_settings
        return body

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        try:
            async with self._http().stream(
                "POST",
                self.url,
                params={"output_format": OUTPUT_FORMAT},
                json=self.request_body(text),
                headers={"xi-api-key": self.api_key},
            ) as response:
                if response.status_code >= 400:
                    raise TTSError(
                        f"ElevenLabs TTS returned HTTP {response.status_code}: "
                        f"{self._error_message(await response.aread(), response)}"
                    )
                async for data in response.aiter_bytes():
                    if data:
                        yield AudioChunk(data, "mulaw", 8000)
        except httpx.TimeoutException as exc:
            raise TTSError(
                f"ElevenLabs TTS timed out ({type(exc).__name__}, limit {self.timeout:g}s)"
            ) from None
        except httpx.HTTPError as exc:
            raise TTSError(
                f"ElevenLabs TTS request failed: {type(exc).__name__}: {self._clean(str(exc))}"
            ) from None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        # Connections belong to the loop that opened them; a new loop gets a new pool.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
            self._client_loop = loop
        return self._client

    def _error_message(self, raw: bytes, response: httpx.Response) -> str:
        """The vendor's own words, cleaned and cut short.

        ElevenLabs answers ``{"detail": {"status": ..., "message": ...}}``, or
        for validation errors ``{"detail": [{"loc": [...], "msg": ...}]}``.
        """
        message = ""
        try:
            detail = json.loads(raw).get("detail")
            if isinstance(detail, dict):
                message = str(detail.get("message") or detail.get("status") or "")
            elif isinstance(detail, list):
                message = "; ".join(
                    str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail
                )
            elif detail:
                message = str(detail)
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace")
        return self._clean(message) or response.reason_phrase or "no error message"

    def _clean(self, text: str) -> str:
        """One short printable line, with our own key blanked out should the vendor echo it."""
        text = text.replace(self.api_key, "***")
        text = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", text)).strip()
        return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
