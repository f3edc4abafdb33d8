"""OpenAI text-to-speech (``POST /v1/audio/speech``), streamed as raw PCM.

The request asks for ``response_format: "pcm"``: 16-bit little-endian mono
at 24 kHz with no header, so each network chunk can be played as it arrives
(playback resamples it to 8 kHz mu-law). Chunks are yielded on whole-sample
boundaries.

Options (``MEDIASTREAM["TTS"]["OPTIONS"]``): ``API_KEY`` (default: the
``OPENAI_API_KEY`` environment variable), ``BASE_URL``
(``https://api.openai.com/v1``; any compatible server), ``MODEL``
(``gpt-4o-mini-tts``), ``VOICE`` (``alloy``), ``INSTRUCTIONS`` (tone of
voice; not supported by ``tts-1``), ``SPEED`` (0.25–4.0), ``TIMEOUT``
(seconds for connecting and between chunks, 30).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from django.core.exceptions import ImproperlyConfigured

from .base import AudioChunk, BaseTTSBackend, TTSError

__all__ = ["OpenAIBackend"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000  # what OpenAI's "pcm" format is
_MAX_ERROR_CHARS = 200


class OpenAIBackend(BaseTTSBackend):
    """Streaming OpenAI TTS over HTTPS, with one pooled client per event loop."""

    def __init__(
        self,
        *,
        API_KEY: str | None = None,
        BASE_URL: str = "https://api.openai.com/v1",
        MODEL: str = "gpt-4o-mini-tts",
        VOICE: str = "alloy",
        INSTRUCTIONS: str | None = None,
        SPEED: float | None = None,
        TIMEOUT: float = 30.0,
    ) -> None:
        super().__init__()
        self.api_key = API_KEY or os.environ.get("OPENAI_API_KEY", "")
        if not self.api_key:
            raise ImproperlyConfigured(
                "OpenAIBackend needs an API key: set "
                'MEDIASTREAM["TTS"]["OPTIONS"]["API_KEY"] or the OPENAI_API_KEY environment variable.'
            )
        self.url = BASE_URL.rstrip("/") + "/audio/speech"
        self.model = MODEL
        self.voice = VOICE
        self.instructions = INSTRUCTIONS
        self.speed = SPEED
        self.timeout = TIMEOUT
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def request_body(self, text: str) -> dict[str, Any]:
        """The JSON body of one speech request."""
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": "pcm",
        }
        if self.instructions:
            body["instructions"] = self.instructions
        if self.speed is not None:
            body["speed"] = self.speed
        return body

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        headers = {"Authorization": f"Bearer {self.api_key}"}
        odd = b""
        try:
            async with self._http().stream(
                "POST", self.url, json=self.request_body(text), headers=headers
            ) as response:
                if response.status_code >= 400:
                    raise TTSError(
                        f"OpenAI TTS returned HTTP {response.status_code}: "
                        f"{self._error_message(await response.aread(), response)}"
                    )
                async for data in response.aiter_bytes():
                    if odd:
                        data = odd + data
                    cut = len(data) & ~1
                    odd = data[cut:]
                    if cut:
                        yield AudioChunk(data[:cut], "pcm_s16le", SAMPLE_RATE)
        except httpx.TimeoutException as exc:
            raise TTSError(f"OpenAI TTS timed out ({type(exc).__name__}, limit {self.timeout:g}s)") from None
        except httpx.HTTPError as exc:
            raise TTSError(
                f"OpenAI TTS request failed: {type(exc).__name__}: {self._clean(str(exc))}"
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
        """The vendor's own words (``{"error": {"message": ...}}``), cleaned and cut short."""
        message = ""
        try:
            error = json.loads(raw).get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or error.get("code") or "")
            elif error:
                message = str(error)
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace")
        return self._clean(message) or response.reason_phrase or "no error message"

    def _clean(self, text: str) -> str:
        return _sanitize(text, self.api_key)


def _sanitize(text: str, secret: str) -> str:
    """One short printable line, with our own key blanked out should the vendor echo it."""
    if secret:
        text = text.replace(secret, "***")
    text = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", text)).strip()
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
