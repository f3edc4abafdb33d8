"""Speech in for one stream: caller audio to the local VAD and the transcription session.

Barge-in must not wait for a transcript, so every frame also goes through a
local VAD whatever the transcription backend (a session that runs the VAD
itself lends its events instead, so no frame is scored twice). What the VAD and
the session hear is reported, as the events below, to one callback: the stream
session decides what they mean (one speech start per utterance, barge-in,
transcripts to store).

A transcription session that cannot connect does not end the call: the local
VAD takes over, and the failure is reported once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from voicecall.logsafe import sanitize

from .transcription.base import BaseTranscriptionBackend, TranscriptionListener
from .vad import SpeechDetector, SpeechEnded, SpeechStarted

__all__ = [
    "SpeechIn",
    "CallerSpeechEvent",
    "BackendSpeechStarted",
    "Partial",
    "Final",
    "TranscriptionReady",
    "TranscriptionFailed",
    "TranscriptionError",
    "SpeechStarted",
    "SpeechEnded",
]

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
#: Transcription errors logged per stream; later ones are only reported as events.
MAX_ERRORS_LOGGED = 5


@dataclass(frozen=True, slots=True)
class BackendSpeechStarted:
    """The transcription backend heard speech begin (``offset_ms`` from the VAD when one runs)."""

    offset_ms: int | None


@dataclass(frozen=True, slots=True)
class Partial:
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    text: str
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TranscriptionReady:
    backend: str


@dataclass(frozen=True, slots=True)
class TranscriptionFailed:
    """The session could not connect; the call goes on without transcripts."""

    backend: str
    error: str


@dataclass(frozen=True, slots=True)
class TranscriptionError:
    backend: str
    error: str


CallerSpeechEvent = (
    SpeechStarted
    | SpeechEnded
    | BackendSpeechStarted
    | Partial
    | Final
    | TranscriptionReady
    | TranscriptionFailed
    | TranscriptionError
)


class SpeechIn:
    def __init__(
        self,
        *,
        call_sid: str,
        stream_sid: str,
        backend: BaseTranscriptionBackend,
        on_event: Callable[[CallerSpeechEvent], None],
        vad_enabled: bool = True,
    ) -> None:
        self.stream_sid = stream_sid
        self._on_event = on_event
        self._backend_name = type(backend).__name__
        #: Whether final transcripts will come: without them the VAD alone ends an utterance.
        self.finals_expected = backend.produces_transcripts
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
        self._vad_enabled = vad_enabled
        if vad_enabled:
            if self.session.runs_vad:
                self.session.on_vad_event = on_event
            else:
                self.detector = SpeechDetector(on_event=on_event)
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
                self._on_event(event)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.detector is not None:
            self.detector.cancel()  # windows still waiting for the VAD batch report nothing now
        task = self._connect_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.session.close(), CLOSE_TIMEOUT)
        except Exception:
            logger.warning("Stream %s: transcription session did not close cleanly", self.stream_sid, exc_info=True)

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
                self.detector = SpeechDetector(on_event=self._on_event)
            error = sanitize(f"{type(exc).__name__}: {exc}", 200)
            logger.warning(
                "Stream %s: transcription (%s) unavailable, call goes on without it: %s",
                self.stream_sid,
                self._backend_name,
                error,
            )
            self._on_event(TranscriptionFailed(self._backend_name, error))
            return
        self._on_event(TranscriptionReady(self._backend_name))

    # --- callbacks from the transcription session ------------------------------

    def _backend_speech_started(self) -> None:
        if not self._closed:
            offset = self.detector.offset_ms if self.detector is not None else self.session.speech_offset_ms
            self._on_event(BackendSpeechStarted(offset))

    def _partial(self, text: str) -> None:
        if not self._closed and text:
            self._on_event(Partial(text))

    def _final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> None:
        text = (text or "").strip()
        if self._closed and not text:
            return
        self._on_event(Final(text, start_ms, end_ms))

    def _error(self, exc: Exception) -> None:
        error = sanitize(f"{type(exc).__name__}: {exc}", 200)
        if self._errors_logged < MAX_ERRORS_LOGGED:
            self._errors_logged += 1
            logger.warning("Stream %s: transcription error: %s", self.stream_sid, error)
        self._on_event(TranscriptionError(self._backend_name, error))
