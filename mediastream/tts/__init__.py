"""Text-to-speech backends, chosen by ``MEDIASTREAM["TTS"]``."""

from __future__ import annotations

from django.core.signals import setting_changed
from django.dispatch import receiver

from ..backends import load_backend
from ..conf import app_settings
from .base import AudioChunk, BaseTTSBackend, TTSError

__all__ = ["AudioChunk", "BaseTTSBackend", "TTSError", "get_tts_backend"]

_backend: BaseTTSBackend | None = None


def get_tts_backend() -> BaseTTSBackend:
    """The process-wide TTS backend (built once: models load once per process)."""
    global _backend
    if _backend is None:
        _backend = load_backend("TTS", app_settings.TTS)
    return _backend


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs) -> None:
    global _backend
    if setting == "MEDIASTREAM":
        _backend = None
