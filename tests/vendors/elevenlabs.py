"""A local ElevenLabs endpoint: ``POST /v1/text-to-speech/{voice_id}/stream``.

Checks the ``xi-api-key`` header, the ``output_format`` query parameter and
the JSON body (``text`` required, ``model_id``), and answers errors in
ElevenLabs' shapes: ``{"detail": {"status", "message"}}``, or a list of
``{"loc", "msg", "type"}`` for validation errors (422). ``ulaw_8000`` audio
is 8 kHz mu-law; ``pcm_<rate>`` is PCM16 LE; both streamed in chunks.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from mediastream.audio import ulaw_encode

from .server import FakeVendorServer, tone_pcm

__all__ = ["FakeElevenLabsTTS"]

_PCM_RATES = {f"pcm_{rate}": rate for rate in (8000, 16000, 22050, 24000, 44100)}


def _detail(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)


def _invalid(loc: list[str], msg: str, type_: str) -> web.Response:
    return web.json_response({"detail": [{"loc": loc, "msg": msg, "type": type_}]}, status=422)


class FakeElevenLabsTTS(FakeVendorServer):
    """``base_url`` is the origin, ready for ``ElevenLabsBackend(BASE_URL=...)``.

    ``voice_ids``: when given, other voices get 404 ``voice_not_found``.
    ``audio(text, sample_rate) -> PCM16 bytes`` makes the audio (mu-law encoded
    for ``ulaw_8000``).
    """

    def __init__(
        self,
        *,
        api_key: str = "xi-test-key",
        voice_ids: set[str] | None = None,
        audio: Callable[[str, int], bytes] | None = None,
        **options,
    ) -> None:
        super().__init__(**options)
        self.api_key = api_key
        self.voice_ids = voice_ids
        self.audio = audio or (lambda text, rate: tone_pcm(text, sample_rate=rate))

    @property
    def base_url(self) -> str:
        return self.origin

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/text-to-speech/{voice_id}/stream", self._stream)]

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("xi-api-key", "") != self.api_key:
            return _detail(401, "invalid_api_key", "Invalid API key")
        voice_id = request.match_info["voice_id"]
        if self.voice_ids is not None and voice_id not in self.voice_ids:
            return _detail(404, "voice_not_found", f"A voice with voice_id {voice_id} was not found.")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _invalid(["body"], "JSON decode error", "json_invalid")
        if not isinstance(body, dict) or not body.get("text"):
            return _invalid(["body", "text"], "Field required", "missing")
        output_format = request.query.get("output_format", "mp3_44100_128")
        text = body["text"]
        if output_format == "ulaw_8000":
            return await self.stream_audio(request, ulaw_encode(self.audio(text, 8000)), "audio/basic")
        if output_format in _PCM_RATES:
            return await self.stream_audio(request, self.audio(text, _PCM_RATES[output_format]), "audio/pcm")
        return _detail(400, "invalid_output_format", f"This fake server does not produce {output_format}.")
