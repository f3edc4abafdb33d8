"""Text-to-speech backends, chosen by ``MEDIASTREAM["TTS"]``; the process's one is
``mediastream.backends.backends.tts``."""

from __future__ import annotations

from .base import AudioChunk, BaseTTSBackend, TTSError

__all__ = ["AudioChunk", "BaseTTSBackend", "TTSError"]
