"""A local OpenAI speech endpoint: ``POST /v1/audio/speech`` as documented.

Checks the bearer token and the JSON body (``model``, ``input`` ≤ 4096
characters, ``voice``, ``response_format``), and answers errors in OpenAI's
shape: ``{"error": {"message", "type", "param", "code"}}``. Audio is raw PCM16
LE at 24 kHz (``"pcm"``), streamed in chunks.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from .server import FakeVendorServer, tone_pcm

__all__ = ["FakeOpenAISpeech"]

_FORMATS = {"mp3", "opus", "aac", "flac", "wav", "pcm"}


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param=None, code=None):
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status)


class FakeOpenAISpeech(FakeVendorServer):
    """``base_url`` is ``http://127.0.0.1:<port>/v1``, ready for ``OpenAIBackend(BASE_URL=...)``."""

    def __init__(
        self,
        *,
        api_key: str = "sk-test-key",
        audio: Callable[[str], bytes] | None = None,
        **options,
    ) -> None:
        super().__init__(**options)
        self.api_key = api_key
        self.audio = audio or (lambda text: tone_pcm(text, sample_rate=24000))

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/audio/speech", self._speech)]

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        if token != self.api_key:
            shown = f"{token[:3]}****{token[-4:]}" if len(token) > 8 else "****"
            return _error(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        for field in ("model", "input", "voice"):
            if not body.get(field):
                return _error(400, f"Missing required parameter: '{field}'.", param=field,
                              code="missing_required_parameter")  # fmt: skip
        if len(body["input"]) > 4096:
            return _error(
                400, "Input is longer than 4096 characters.", param="input", code="string_above_max_length"
            )
        response_format = body.get("response_format", "mp3")
        if response_format not in _FORMATS:
            return _error(400, f"Invalid value: '{response_format}'.", param="response_format")
        if response_format != "pcm":
            return _error(400, "This fake server only produces 'pcm'.", param="response_format")
        return await self.stream_audio(request, self.audio(body["input"]), "audio/pcm")
