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

import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

from .base import AudioChunk
from .http import HTTPTTSBackend

__all__ = ["ElevenLabsBackend"]

OUTPUT_FORMAT = "ulaw_8000"


class ElevenLabsBackend(HTTPTTSBackend):
    """Streaming ElevenLabs TTS in Twilio's own format, one pooled client per event loop."""

    vendor = "ElevenLabs TTS"

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
        if not VOICE_ID:
            raise ImproperlyConfigured(
                'ElevenLabsBackend needs a voice: set MEDIASTREAM["TTS"]["OPTIONS"]["VOICE_ID"] '
                "(see GET /v1/voices in your ElevenLabs account)."
            )
        api_key = API_KEY or os.environ.get("ELEVENLABS_API_KEY", "")
        if not api_key:
            raise ImproperlyConfigured(
                "ElevenLabsBackend needs an API key: set "
                'MEDIASTREAM["TTS"]["OPTIONS"]["API_KEY"] or the ELEVENLABS_API_KEY environment variable.'
            )
        super().__init__(api_key=api_key, timeout=TIMEOUT)
        self.url = f"{BASE_URL.rstrip('/')}/v1/text-to-speech/{quote(VOICE_ID, safe='')}/stream"
        self.model_id = MODEL_ID
        self.voice_settings = VOICE_SETTINGS

    def request_body(self, text: str) -> dict[str, Any]:
        """The JSON body of one speech request."""
        body: dict[str, Any] = {"text": text, "model_id": self.model_id}
        if self.voice_settings:
            body["voice_settings"] = self.voice_settings
        return body

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        async for data in self.stream(
            self.url,
            params={"output_format": OUTPUT_FORMAT},
            json_body=self.request_body(text),
            headers={"xi-api-key": self.api_key},
        ):
            yield AudioChunk(data, "mulaw", 8000)

    def error_detail(self, raw: bytes) -> str:
        """ElevenLabs answers ``{"detail": {"status": ..., "message": ...}}``, or
        for validation errors ``{"detail": [{"loc": [...], "msg": ...}]}``."""
        body = self.json_body(raw)
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, dict):
            return str(detail.get("message") or detail.get("status") or "")
        if isinstance(detail, list):
            return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
        return str(detail) if detail else raw.decode("utf-8", "replace")
