"""Realtime transcription backends, chosen by ``MEDIASTREAM["TRANSCRIPTION"]``; the process's one
is ``mediastream.backends.backends.transcription``."""

from __future__ import annotations

from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = ["BaseTranscriptionBackend", "BaseTranscriptionSession", "TranscriptionListener"]
