"""Realtime transcription backends, chosen by ``MEDIASTREAM["TRANSCRIPTION"]``; the process's one
is ``backends.transcription``."""

from __future__ import annotations

from ..backends import backends
from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = ["BaseTranscriptionBackend", "BaseTranscriptionSession", "TranscriptionListener"]


def get_transcription_backend() -> BaseTranscriptionBackend:  # removed once speech_in/speech_out use backends
    return backends.transcription
