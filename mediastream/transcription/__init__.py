"""Realtime transcription backends, chosen by ``MEDIASTREAM["TRANSCRIPTION"]``."""

from __future__ import annotations

from django.core.signals import setting_changed
from django.dispatch import receiver

from ..backends import load_backend
from ..conf import app_settings
from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = [
    "BaseTranscriptionBackend",
    "BaseTranscriptionSession",
    "TranscriptionListener",
    "get_transcription_backend",
]

_backend: BaseTranscriptionBackend | None = None


def get_transcription_backend() -> BaseTranscriptionBackend:
    """The process-wide transcription backend (models load once per process)."""
    global _backend
    if _backend is None:
        _backend = load_backend("TRANSCRIPTION", app_settings.TRANSCRIPTION)
    return _backend


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs) -> None:
    global _backend
    if setting == "MEDIASTREAM":
        _backend = None
