"""A transcription listener that records callbacks and lets tests wait for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mediastream.transcription.base import TranscriptionListener

from mediastream.transcription.locmem import Conditions

__all__ = ["RecordingListener"]


class RecordingListener:
    """Records ``(kind, payload)`` events: partial, final, speech_started, error."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._conditions = Conditions()
        self.listener = TranscriptionListener(
            on_partial=lambda text: self._record("partial", text),
            on_final=lambda text, start_ms, end_ms: self._record("final", (text, start_ms, end_ms)),
            on_speech_started=lambda: self._record("speech_started", None),
            on_error=lambda exc: self._record("error", exc),
        )

    def of(self, kind: str) -> list[Any]:
        return [payload for k, payload in self.events if k == kind]

    @property
    def partials(self) -> list[str]:
        return self.of("partial")

    @property
    def finals(self) -> list[tuple[str, int | None, int | None]]:
        return self.of("final")

    @property
    def errors(self) -> list[Exception]:
        return self.of("error")

    @property
    def speech_starts(self) -> int:
        return len(self.of("speech_started"))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever something is recorded)."""
        await self._conditions.wait_for(predicate, timeout)

    async def wait_count(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        await self.wait_for(lambda: len(self.of(kind)) >= count, timeout)
        return self.of(kind)

    def _record(self, kind: str, payload: Any) -> None:
        self.events.append((kind, payload))
        self._conditions.notify()
