"""Text-to-speech backends, chosen by ``MEDIASTREAM["TTS"]``; the process's one is ``backends.tts``."""

from __future__ import annotations

from ..backends import backends
from .base import AudioChunk, BaseTTSBackend, TTSError

__all__ = ["AudioChunk", "BaseTTSBackend", "TTSError"]


def get_tts_backend() -> BaseTTSBackend:  # removed once speech_in/speech_out use backends
    return backends.tts
