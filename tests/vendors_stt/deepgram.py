"""A fake Deepgram live-streaming (``/v1/listen``) endpoint.

Records binary audio and JSON control messages. On ``CloseStream`` it sends a
``Metadata`` message and closes with 1000, as Deepgram does after flushing
(``close_on_close_stream=False`` keeps it open, to test the forced close).
Helpers push ``Results`` / ``SpeechStarted`` / ``UtteranceEnd``.
"""

from __future__ import annotations

import json
from typing import Any

from . import FakeVendorServer, VendorConnection

__all__ = ["FakeDeepgram"]


class FakeDeepgram(FakeVendorServer):
    path = "/v1/listen"

    def __init__(self, *, close_on_close_stream: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.close_on_close_stream = close_on_close_stream

    async def on_message(self, conn: VendorConnection, message: str | bytes) -> None:
        if not isinstance(message, str):
            return
        if json.loads(message).get("type") == "CloseStream" and self.close_on_close_stream:
            await self.send({"type": "Metadata", "request_id": "fake", "duration": 0.0}, conn)
            await conn.ws.close(1000)

    @staticmethod
    def audio(conn: VendorConnection) -> bytes:
        return b"".join(conn.binary)

    async def results(
        self,
        transcript: str,
        *,
        is_final: bool = False,
        speech_final: bool = False,
        start: float = 0.0,
        duration: float = 1.0,
    ) -> None:
        await self.send(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": duration,
                "start": start,
                "is_final": is_final,
                "speech_final": speech_final,
                "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.98, "words": []}]},
                "metadata": {"request_id": "fake"},
                "from_finalize": False,
            }
        )

    async def speech_started(self, timestamp: float = 0.0) -> None:
        await self.send({"type": "SpeechStarted", "channel": [0], "timestamp": timestamp})

    async def utterance_end(self, last_word_end: float = 0.0) -> None:
        await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end})
