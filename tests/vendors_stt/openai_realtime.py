"""A fake OpenAI Realtime transcription endpoint.

Answers ``session.update`` with ``session.updated`` (echoing the session), like
the real service, unless told to stay silent (``ready=False``) or to reject the
configuration with an ``error`` event (``reject_with="..."``). Helpers push the
transcription events a real session would send.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from . import FakeVendorServer, VendorConnection

__all__ = ["FakeOpenAIRealtime"]


class FakeOpenAIRealtime(FakeVendorServer):
    path = "/v1/realtime?intent=transcription"

    def __init__(self, *, ready: bool = True, reject_with: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ready = ready
        self.reject_with = reject_with

    async def on_message(self, conn: VendorConnection, message: str | bytes) -> None:
        if not isinstance(message, str):
            return
        event = json.loads(message)
        if event.get("type") != "session.update":
            return
        if self.reject_with is not None:
            await self.send(self.error_event(self.reject_with), conn)
        elif self.ready:
            await self.send({"type": "session.updated", "session": event.get("session", {})}, conn)

    # --- what the client sent -------------------------------------------------------
    @staticmethod
    def audio(conn: VendorConnection) -> bytes:
        """The mu-law bytes of every ``input_audio_buffer.append``, in order."""
        return b"".join(base64.b64decode(m["audio"]) for m in conn.of_type("input_audio_buffer.append"))

    # --- server events --------------------------------------------------------------
    @staticmethod
    def error_event(message: str, code: str = "invalid_value") -> dict[str, Any]:
        return {
            "type": "error",
            "event_id": "event_err",
            "error": {"type": "invalid_request_error", "code": code, "message": message, "param": None},
        }

    async def speech_started(self, item_id: str = "item_1", audio_start_ms: int = 0) -> None:
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "item_id": item_id,
                "audio_start_ms": audio_start_ms,
            }
        )

    async def speech_stopped(self, item_id: str = "item_1", audio_end_ms: int = 0) -> None:
        await self.send(
            {"type": "input_audio_buffer.speech_stopped", "item_id": item_id, "audio_end_ms": audio_end_ms}
        )

    async def delta(self, text: str, item_id: str = "item_1") -> None:
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": text,
            }
        )

    async def completed(self, transcript: str, item_id: str = "item_1") -> None:
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
            }
        )
