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

import os
from collections.abc import AsyncIterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .base import AudioChunk
from .http import HTTPTTSBackend

__all__ = ["OpenAIBackend"]

SAMPLE_RATE = 24000  # what OpenAI's "pcm" format is


class OpenAIBackend(HTTPTTSBackend):
    """Streaming OpenAI TTS over HTTPS, with one pooled client per event loop."""

    vendor = "OpenAI TTS"

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
        api_key = API_KEY or os.environ.get("OPENAI_API_KEY", "")
        if not api_key:
            raise ImproperlyConfigured(
                "OpenAIBackend needs an API key: set "
                'MEDIASTREAM["TTS"]["OPTIONS"]["API_KEY"] or the OPENAI_API_KEY environment variable.'
            )
        super().__init__(api_key=api_key, timeout=TIMEOUT)
        self.url = BASE_URL.rstrip("/") + "/audio/speech"
        self.model = MODEL
        self.voice = VOICE
        self.instructions = INSTRUCTIONS
        self.speed = SPEED

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
        odd = b""  # network chunks may split a 16-bit sample
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async for data in self.stream(self.url, json_body=self.request_body(text), headers=headers):
            data = odd + data
            cut = len(data) & ~1
            odd = data[cut:]
            if cut:
                yield AudioChunk(data[:cut], "pcm_s16le", SAMPLE_RATE)

    def error_detail(self, raw: bytes) -> str:
        """OpenAI answers ``{"error": {"message": ..., "code": ...}}``."""
        body = self.json_body(raw)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or "")
        return str(error) if error else raw.decode("utf-8", "replace")
