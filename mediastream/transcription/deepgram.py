"""Deepgram streaming speech-to-text (Nova-3) over WebSocket.

Deepgram takes Twilio's 8 kHz mu-law as is. Protocol (Deepgram's documented
live-streaming API):

* ``wss://api.deepgram.com/v1/listen?encoding=mulaw&sample_rate=8000&channels=1
  &interim_results=true&vad_events=true&endpointing=<ms>&model=<model>&language=<lang>``
  (+ ``utterance_end_ms`` unless disabled) with ``Authorization: Token <key>``;
  ready as soon as the socket opens;
* audio: binary frames of raw mu-law;
* ``Results``: ``channel.alternatives[0].transcript``. ``is_final: false`` is an
  interim result. ``is_final: true`` freezes a *segment*; Deepgram may split one
  spoken utterance into several final segments, so segments are collected and
  the utterance's ``on_final`` fires on ``speech_final: true`` (its endpoint) or
  on ``UtteranceEnd``. Partials show the collected segments plus the interim.
  ``start``/``duration`` (seconds) give the final's ``start_ms``/``end_ms``;
* ``SpeechStarted`` → ``on_speech_started``; ``Error`` messages → ``on_error``;
* close: ``{"type": "CloseStream"}`` (Deepgram flushes its last results, then
  closes); ``{"type": "KeepAlive"}`` every 5 s while no audio flows, since
  Deepgram drops a connection after 10 s without data.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

from .websocket import (
    TranscriptionError,
    WebSocketTranscriptionBackend,
    WebSocketTranscriptionSession,
)

__all__ = ["DeepgramBackend", "DeepgramSession"]

DEFAULT_URL = "wss://api.deepgram.com/v1/listen"
CLOSE_STREAM = '{"type":"CloseStream"}'
KEEP_ALIVE = '{"type":"KeepAlive"}'


def _query(config: dict[str, Any]) -> dict[str, str]:
    params = {
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "vad_events": "true",
        "endpointing": str(config["endpointing_ms"]),
        "model": config["model"],
    }
    if config["language"]:
        params["language"] = config["language"]
    if config["utterance_end_ms"]:
        params["utterance_end_ms"] = str(config["utterance_end_ms"])
    return params


class DeepgramSession(WebSocketTranscriptionSession):
    provider = "Deepgram"
    ready_on_open = True
    keepalive_interval = 5.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._segments: list[str] = []
        self._start_ms: int | None = None
        self._end_ms: int | None = None

    async def resolve_url(self) -> str:
        base = self.config["url"]
        return f"{base}{'&' if '?' in base else '?'}{urlencode(_query(self.config))}"

    async def resolve_headers(self) -> dict[str, str]:
        key = self.config["api_key"] or os.environ.get("DEEPGRAM_API_KEY")
        if not key:
            raise TranscriptionError(
                f"{self.provider}: no API key (set OPTIONS API_KEY or the DEEPGRAM_API_KEY variable)"
            )
        return {"Authorization": f"Token {key}"}

    def encode_audio(self, audio: bytes) -> bytes:
        return audio

    def close_message(self) -> str:
        return CLOSE_STREAM

    def keepalive_message(self) -> str:
        return KEEP_ALIVE

    def on_connection_lost(self) -> None:
        self._flush()  # whatever was final before the drop is still the caller's words

    def handle_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Results":
            self._on_results(message)
        elif kind == "SpeechStarted":
            self.emit_speech_started()
        elif kind == "UtteranceEnd":
            self._flush()
        elif kind == "Error":
            detail = message.get("description") or message.get("message") or "unknown error"
            code = message.get("err_code") or message.get("variant")
            self.provider_error(f"{detail} ({code})" if code else str(detail))

    def _on_results(self, message: dict[str, Any]) -> None:
        try:
            text = str(message["channel"]["alternatives"][0].get("transcript") or "").strip()
        except (KeyError, IndexError, TypeError, AttributeError):
            self.provider_error("Results message without channel.alternatives[0]")
            return
        if not message.get("is_final"):
            partial = " ".join([*self._segments, text]).strip()
            if text:
                self.emit_partial(partial)
            return
        if text:
            start, duration = _ms(message.get("start")), _ms(message.get("duration"))
            end = None if start is None or duration is None else start + duration
            if self._start_ms is None and start is not None:
                self._start_ms = self.audio_offset_ms + start
            if end is not None:
                self._end_ms = self.audio_offset_ms + end
            self._segments.append(text)
            if not message.get("speech_final"):
                self.emit_partial(" ".join(self._segments))
        if message.get("speech_final"):
            self._flush()

    def _flush(self) -> None:
        text = " ".join(self._segments).strip()
        start, end = self._start_ms, self._end_ms
        self._segments, self._start_ms, self._end_ms = [], None, None
        if text:
            self.emit_final(text, start, end)


def _ms(seconds: Any) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    return round(seconds * 1000)


class DeepgramBackend(WebSocketTranscriptionBackend):
    """Deepgram streaming; select it with ``MEDIASTREAM["TRANSCRIPTION"]["BACKEND"] =
    "mediastream.transcription.deepgram.DeepgramBackend"``.

    ``API_KEY=None`` reads ``DEEPGRAM_API_KEY`` when a session connects.
    ``UTTERANCE_END_MS=None`` turns off ``UtteranceEnd`` (finals then come only
    from ``speech_final``). Connection options as for
    :class:`~mediastream.transcription.websocket.WebSocketTranscriptionBackend`.
    """

    session_class = DeepgramSession

    def __init__(
        self,
        *,
        API_KEY: str | None = None,
        URL: str = DEFAULT_URL,
        MODEL: str = "nova-3",
        LANGUAGE: str | None = "en",
        ENDPOINTING_MS: int = 800,
        UTTERANCE_END_MS: int | None = 1000,
        **connection: Any,
    ) -> None:
        super().__init__(**connection)
        self.config = {
            "api_key": API_KEY,
            "url": URL,
            "model": MODEL,
            "language": LANGUAGE,
            "endpointing_ms": ENDPOINTING_MS,
            "utterance_end_ms": UTTERANCE_END_MS,
        }

