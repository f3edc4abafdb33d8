"""Pluggable backends: ``backends.tts`` and ``backends.transcription``, built from the settings.

``backends`` is the process-wide :class:`~.handler.BackendHandler`. It is reset
(its backends closed and dropped) when ``MEDIASTREAM`` changes, and its
backends are closed when the process exits, so no backend outlives its use
(a Piper backend's worker process in particular).
"""

from __future__ import annotations

import atexit
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from .base import Backend
from .handler import BackendHandler, BackendKind
from .loading import InvalidBackendError, load_backend

__all__ = ["Backend", "BackendHandler", "BackendKind", "InvalidBackendError", "backends", "load_backend"]

backends = BackendHandler()

atexit.register(backends.close_all)


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "MEDIASTREAM":
        backends.reset()
