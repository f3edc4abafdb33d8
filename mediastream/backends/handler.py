"""The process-wide backends: one per kind, built on first use, closed on demand.

Like Django's cache handler, but one set per process rather than per thread:
backends hold process-wide resources (the Piper worker, loaded models) that
every stream in the process shares.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from django.utils.module_loading import import_string

from ..conf import app_settings
from .base import Backend
from .loading import load_backend

if TYPE_CHECKING:
    from ..agents.base import AgentBackend
    from ..transcription.base import BaseTranscriptionBackend
    from ..tts.base import BaseTTSBackend

__all__ = ["BackendHandler", "BackendKind"]

logger = logging.getLogger(__name__)

B = TypeVar("B")


class BackendKind(Generic[B]):
    """One kind of backend: built from ``MEDIASTREAM[setting]``, an instance of ``base``.

    ``base`` is a dotted path, imported when the first backend of the kind is
    built: the base classes' modules import this package. An ``optional`` kind
    whose setting is unset (or None) has no backend: reading it gives None.
    """

    def __init__(self, setting: str, base: str, *, optional: bool = False) -> None:
        self.setting = setting
        self.base = base
        self.optional = optional
        self.name = setting.lower()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> BackendKind[B]: ...

    @overload
    def __get__(self, instance: BackendHandler, owner: type) -> B: ...

    def __get__(self, instance: BackendHandler | None, owner: type) -> Any:
        if instance is None:
            return self
        return instance.get(self)

    def __repr__(self) -> str:
        return f"<BackendKind {self.name}: MEDIASTREAM[{self.setting!r}]>"


class BackendHandler:
    """``backends.tts``, ``backends.transcription``, ``backends.agent``: the backend of each kind, built once.

    A kind is one line here. ``reset()`` (run on ``setting_changed`` for
    ``MEDIASTREAM``) drops and closes what was built, so the next read builds
    from the new settings; ``close_all()`` / ``aclose_all()`` close every built
    backend and keep it (a closed backend reacquires what it needs when used).
    """

    transcription: BackendKind[BaseTranscriptionBackend] = BackendKind(
        "TRANSCRIPTION", "mediastream.transcription.base.BaseTranscriptionBackend"
    )
    tts: BackendKind[BaseTTSBackend] = BackendKind("TTS", "mediastream.tts.base.BaseTTSBackend")
    # A text agent (BaseAgent) or a speech agent (BaseSpeechAgent): both are AgentBackends.
    agent: BackendKind[AgentBackend | None] = BackendKind("AGENT", "mediastream.agents.base.AgentBackend", optional=True)

    def __init__(self) -> None:
        self._built: dict[str, Backend] = {}
        # Building is serialized so two threads never build (and leak) two backends of a kind.
        self._lock = threading.RLock()

    @classmethod
    def kinds(cls) -> list[BackendKind[Any]]:
        """Every kind the handler knows, in declaration order."""
        seen: dict[str, BackendKind[Any]] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                if isinstance(value, BackendKind):
                    seen[value.name] = value
        return list(seen.values())

    def get(self, kind: BackendKind[B]) -> B:
        """The backend of ``kind``, built from the settings on first use."""
        backend = self._built.get(kind.name)
        if backend is not None:
            return backend  # type: ignore[return-value]
        with self._lock:
            backend = self._built.get(kind.name)
            if backend is None:
                config = app_settings.as_dict().get(kind.setting)
                if config is None and kind.optional:
                    return None  # type: ignore[return-value]
                backend = load_backend(kind.setting, config, import_string(kind.base))
                self._built[kind.name] = backend
                logger.debug("Built the %s backend %s", kind.name, type(backend).__name__)
        return backend  # type: ignore[return-value]

    def all(self) -> list[Backend]:
        """The backends built so far."""
        return list(self._built.values())

    def close_all(self) -> None:
        """Close every built backend now; they stay built."""
        for backend in self.all():
            _close(backend)

    async def aclose_all(self) -> None:
        """Close every built backend and wait until each is closed; they stay built."""
        for backend in self.all():
            try:
                await backend.aclose()
            except Exception:
                logger.exception("Closing the %s backend failed", type(backend).__name__)

    def reset(self) -> None:
        """Drop every built backend and close it; the next read builds from the settings."""
        with self._lock:
            dropped, self._built = list(self._built.values()), {}
        for backend in dropped:
            _close(backend)


def _close(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        logger.exception("Closing the %s backend failed", type(backend).__name__)
