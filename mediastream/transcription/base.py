"""The transcription backend contract.

A backend (``__init__(**OPTIONS)``) makes one session per stream with
``create_session(stream_sid=..., call_sid=..., listener=...)``. A session has
``connect()``, ``send_audio(mulaw_8k_bytes)`` and ``close()``, and reports
through the listener's callbacks. Sessions must never raise into the caller of
``send_audio`` (it runs on the per-frame path) and must report provider
failures through ``listener.on_error`` instead of raising.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field

__all__ = ["BaseTranscriptionBackend", "BaseTranscriptionSession", "TranscriptionListener"]


def _ignore(*args, **kwargs) -> None:
    return None


@dataclass(slots=True)
class TranscriptionListener:
    """Callbacks a session calls on the event loop. All are plain, non-blocking callables.

    ``on_final(text, start_ms, end_ms)`` gives offsets into the stream's audio
    when the backend knows them (else ``None``).
    """

    on_partial: Callable[[str], None] = field(default=_ignore)
    on_final: Callable[[str, int | None, int | None], None] = field(default=_ignore)
    on_speech_started: Callable[[], None] = field(default=_ignore)
    on_error: Callable[[Exception], None] = field(default=_ignore)


class BaseTranscriptionSession:
    #: Sessions that run the local VAD on the stream's audio themselves (to cut
    #: utterances) set this and pass every VAD event to ``on_vad_event``, so the
    #: consumer uses those events for barge-in instead of running the VAD twice.
    runs_vad = False

    def __init__(self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.listener = listener
        self.on_vad_event: Callable[[Any], None] | None = None

    async def connect(self) -> None:
        """Open the session; raise if it cannot be opened (the call goes on without it)."""
        raise NotImplementedError("subclasses of BaseTranscriptionSession must provide connect()")

    def send_audio(self, audio: bytes) -> None:
        """Take 8 kHz mu-law audio. Never blocks, never raises."""
        raise NotImplementedError("subclasses of BaseTranscriptionSession must provide send_audio()")

    async def close(self) -> None:
        """Flush and release; safe to call twice."""
        raise NotImplementedError("subclasses of BaseTranscriptionSession must provide close()")


class BaseTranscriptionBackend:
    #: Whether the backend emits its own speech-start events.
    provides_speech_start = False
    #: Whether final transcripts will come (False for backends that drop audio);
    #: without them the local VAD alone ends a caller utterance.
    produces_transcripts = True

    def __init__(self, **options) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    async def warm_up(self) -> None:
        """Load models ahead of the first call (optional)."""

    def create_session(
        self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener
    ) -> BaseTranscriptionSession:
        raise NotImplementedError(
            "subclasses of BaseTranscriptionBackend must provide a create_session() method"
        )
