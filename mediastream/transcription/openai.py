"""OpenAI Realtime API transcription (``gpt-4o-transcribe``) over WebSocket.

Protocol (OpenAI's documented realtime transcription session, GA shape). All
message shapes live in the ``_session_update`` / ``_append`` functions and the
``handle_message`` table below so they are easy to adjust:

* connect to ``wss://api.openai.com/v1/realtime?intent=transcription`` with
  ``Authorization: Bearer <key>``;
* on open send ``session.update`` with a ``transcription`` session: input
  format ``audio/pcmu`` (G.711 mu-law, 8 kHz: Twilio's bytes go through
  untouched), the transcription model/language/prompt and ``server_vad`` turn
  detection; ready on ``session.updated`` (or the beta
  ``transcription_session.updated``);
* audio: ``input_audio_buffer.append`` with base64 audio;
* ``conversation.item.input_audio_transcription.delta``: partial text,
  accumulated per item → ``on_partial(accumulated)``;
* ``...transcription.completed``: ``on_final(transcript, start_ms, end_ms)``,
  with the offsets from the item's ``speech_started``/``speech_stopped`` events;
* ``input_audio_buffer.speech_started`` → ``on_speech_started`` (and the partial
  text restarts); ``error`` and ``...transcription.failed`` → ``on_error``.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from .websocket import (
    TranscriptionError,
    WebSocketTranscriptionBackend,
    WebSocketTranscriptionSession,
)

__all__ = ["OpenAIRealtimeBackend", "OpenAIRealtimeSession"]

DEFAULT_URL = "wss://api.openai.com/v1/realtime?intent=transcription"

_DELTA = "conversation.item.input_audio_transcription.delta"
_COMPLETED = "conversation.item.input_audio_transcription.completed"
_FAILED = "conversation.item.input_audio_transcription.failed"


def _session_update(config: dict[str, Any]) -> dict[str, Any]:
    transcription: dict[str, Any] = {"model": config["model"]}
    if config["language"]:
        transcription["language"] = config["language"]
    if config["prompt"]:
        transcription["prompt"] = config["prompt"]
    return {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": transcription,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": config["vad_threshold"],
                        "prefix_padding_ms": config["prefix_padding_ms"],
                        "silence_duration_ms": config["silence_duration_ms"],
                    },
                }
            },
        },
    }


def _append(audio: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode("ascii")},
        separators=(",", ":"),
    )


def _error_text(message: dict[str, Any]) -> str:
    error = message.get("error")
    if isinstance(error, dict):
        parts = [str(error[k]) for k in ("type", "code") if error.get(k)]
        text = str(error.get("message") or "unknown error")
        return f"{text} ({', '.join(parts)})" if parts else text
    return str(error or message)


class OpenAIRealtimeSession(WebSocketTranscriptionSession):
    provider = "OpenAI Realtime"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._partials: dict[str, str] = {}
        self._started_ms: dict[str, int] = {}
        self._stopped_ms: dict[str, int] = {}

    async def resolve_url(self) -> str:
        return self.config["url"]

    async def resolve_headers(self) -> dict[str, str]:
        key = self.config["api_key"] or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise TranscriptionError(
                f"{self.provider}: no API key (set OPTIONS API_KEY or the OPENAI_API_KEY variable)"
            )
        return {"Authorization": f"Bearer {key}"}

    async def on_open(self) -> None:
        await self.send_json(_session_update(self.config))

    def encode_audio(self, audio: bytes) -> str:
        return _append(audio)

    def on_connection_lost(self) -> None:
        self._partials.clear()
        self._started_ms.clear()
        self._stopped_ms.clear()

    def handle_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        item = str(message.get("item_id") or "")
        if kind in ("session.updated", "transcription_session.updated"):
            self.mark_ready()
        elif kind == "input_audio_buffer.speech_started":
            self._partials.pop(item, None)
            if isinstance(message.get("audio_start_ms"), int):
                self._started_ms[item] = self.audio_offset_ms + message["audio_start_ms"]
            self.emit_speech_started()
        elif kind == "input_audio_buffer.speech_stopped":
            if isinstance(message.get("audio_end_ms"), int):
                self._stopped_ms[item] = self.audio_offset_ms + message["audio_end_ms"]
        elif kind == _DELTA:
            text = self._partials.get(item, "") + str(message.get("delta") or "")
            self._partials[item] = text
            if text.strip():
                self.emit_partial(text)
        elif kind == _COMPLETED:
            self._partials.pop(item, None)
            text = str(message.get("transcript") or "").strip()
            start, end = self._started_ms.pop(item, None), self._stopped_ms.pop(item, None)
            if text:
                self.emit_final(text, start, end)
        elif kind == _FAILED:
            self._partials.pop(item, None)
            self.provider_error(f"transcription failed: {_error_text(message)}")
        elif kind == "error":
            self.provider_error(_error_text(message))


class OpenAIRealtimeBackend(WebSocketTranscriptionBackend):
    """OpenAI Realtime transcription; select it with ``MEDIASTREAM["TRANSCRIPTION"]["BACKEND"] =
    "mediastream.transcription.openai.OpenAIRealtimeBackend"``.

    ``API_KEY=None`` reads ``OPENAI_API_KEY`` when a session connects.
    Connection options (``CONNECT_TIMEOUT`` ...) are those of
    :class:`~mediastream.transcription.websocket.WebSocketTranscriptionBackend`.
    """

    session_class = OpenAIRealtimeSession

    def __init__(
        self,
        *,
        API_KEY: str | None = None,
        URL: str = DEFAULT_URL,
        MODEL: str = "gpt-4o-transcribe",
        LANGUAGE: str | None = None,
        PROMPT: str | None = None,
        VAD_THRESHOLD: float = 0.5,
        PREFIX_PADDING_MS: int = 300,
        SILENCE_DURATION_MS: int = 800,
        **connection: Any,
    ) -> None:
        super().__init__(**connection)
        self.config = {
            "api_key": API_KEY,
            "url": URL,
            "model": MODEL,
            "language": LANGUAGE,
            "prompt": PROMPT,
            "vad_threshold": VAD_THRESHOLD,
            "prefix_padding_ms": PREFIX_PADDING_MS,
            "silence_duration_ms": SILENCE_DURATION_MS,
        }

