"""Speech in for one stream: caller audio to the local VAD and the transcription session.

Barge-in must not wait for a transcript, so every frame also goes through a
local VAD whatever the transcription backend. Speech starts from the VAD, from
the backend, and from partial/final transcripts are folded by
:class:`~mediastream.turns.CallerTurns` into one start per caller utterance.

A transcription session that cannot connect does not end the call: speech out
keeps working, and the failure is an event and one log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from voicecall.logsafe import sanitize

from . import db
from .conf import app_settings
from .transcription.base import BaseTranscriptionBackend, TranscriptionListener
from .turns import CallerTurns
from .vad import SpeechDetector, SpeechEnded, SpeechStarted

__all__ = ["SpeechIn"]

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0


class SpeechIn:
    def __init__(
        self,
        *,
        call_sid: str,
        stream_sid: str,
        backend: BaseTranscriptionBackend,
        announce: Callable[..., None],
        on_speech_started: Callable[[int | None, str], None],
        call_id: int,
        stream_id: int,
    ) -> None:
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self._announce = announce
        self._on_speech_started = on_speech_started
        self._call_id = call_id
        self._stream_id = stream_id
        # With the discard backend no final ever comes: the VAD alone ends an utterance.
        self.turns = CallerTurns(finals_expected=getattr(backend, "produces_transcripts", True))
        self._backend_name = type(backend).__name__
        self.session = backend.create_session(
            stream_sid=stream_sid,
            call_sid=call_sid,
            listener=TranscriptionListener(
                on_partial=self._partial,
                on_final=self._final,
                on_speech_started=self._backend_speech_started,
                on_error=self._error,
            ),
        )
        self.detector: SpeechDetector | None = None
        self._vad_enabled = app_settings.VAD.get("ENABLED", True)
        if self._vad_enabled:
            if self.session.runs_vad:  # the session's own VAD events drive barge-in too
                self.session.on_vad_event = self._vad_event
            else:
                self.detector = SpeechDetector()
        self.ready = False
        self.failed = False
        self._connect_task: asyncio.Task | None = None
        self._closed = False
        self._errors_logged = 0

    def start(self) -> None:
        self._connect_task = asyncio.create_task(self._connect(), name=f"stt-connect:{self.stream_sid}")

    def feed(self, mulaw: bytes) -> None:
        """One inbound frame; never blocks."""
        if not self.failed:
            self.session.send_audio(mulaw)
        detector = self.detector
        if detector is not None:
            for event in detector.feed(mulaw):
                self._vad_event(event)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task = self._connect_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.session.close(), CLOSE_TIMEOUT)
        except Exception:
            logger.warning("Stream %s: transcription session did not close cleanly", self.stream_sid, exc_info=True)

    # --- session lifecycle ---------------------------------------------------

    async def _connect(self) -> None:
        try:
            await self.session.connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = True
            if self._vad_enabled and self.detector is None:
                # The session gets no more audio, so it can no longer hear barge-ins for us.
                self.session.on_vad_event = None
                self.detector = SpeechDetector()
            error = sanitize(f"{type(exc).__name__}: {exc}", 200)
            logger.warning(
                "Stream %s: transcription (%s) unavailable, call goes on without it: %s",
                self.stream_sid,
                self._backend_name,
                error,
            )
            self._announce("transcription.failed", {"backend": self._backend_name, "error": error})
            return
        self.ready = True
        self._announce("transcription.ready", {"backend": self._backend_name}, broadcast=True)

    # --- callbacks from the VAD and the session ------------------------------

    def _vad_event(self, event: SpeechStarted | SpeechEnded) -> None:
        if type(event) is SpeechStarted:
            if self.turns.on_vad_start():
                self._fire_speech_start(event.offset_ms, "vad")
        else:
            self.turns.on_vad_end()

    def _fire_speech_start(self, offset_ms: int | None, source: str) -> None:
        self._announce("speech.started", {"offset_ms": offset_ms, "source": source})
        self._on_speech_started(offset_ms, source)

    def _backend_speech_started(self) -> None:
        if not self._closed and self.turns.on_backend_start():
            detector = self.detector or getattr(self.session, "detector", None)
            self._fire_speech_start(detector.offset_ms if detector else None, "transcription")

    def _partial(self, text: str) -> None:
        if self._closed or not text:
            return
        if self.turns.on_partial(text):
            self._fire_speech_start(None, "partial")
        self._announce("transcript.partial", {"text": text}, record=False)

    def _final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> None:
        text = (text or "").strip()
        if self._closed and not text:
            return
        if self.turns.on_final(text):
            self._fire_speech_start(start_ms, "final")
        if not text:
            return
        call_id, stream_id = self._call_id, self._stream_id

        def store() -> Any:
            return db.add_transcript(
                call_id, stream_id, speaker="caller", text=text, start_ms=start_ms, end_ms=end_ms
            )

        self._announce(
            "transcript.final", {"text": text, "start_ms": start_ms, "end_ms": end_ms}, also=store
        )

    def _error(self, exc: Exception) -> None:
        error = sanitize(f"{type(exc).__name__}: {exc}", 200)
        if self._errors_logged < 5:
            self._errors_logged += 1
            logger.warning("Stream %s: transcription error: %s", self.stream_sid, error)
        self._announce("transcription.error", {"backend": self._backend_name, "error": error})
