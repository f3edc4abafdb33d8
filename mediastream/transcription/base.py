"""The transcription backend contract.

A backend (a :class:`~mediastream.backends.Backend`: ``__init__(**OPTIONS)``,
``warm_up()``, ``close()``/``aclose()``) makes one session per stream with
``create_session(stream_sid=..., call_sid=..., listener=...)``. A session has
``connect()``, ``send_audio(mulaw_8k_bytes)`` and ``close()``, and reports
through the listener's callbacks. Sessions must never raise into the caller of
``send_audio`` (it runs on the per-frame path) and must report provider
failures through ``listener.on_error`` instead of raising.

The stream code reads only what these base classes declare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..backends.base import Backend

if TYPE_CHECKING:
    from ..vad import SpeechEnded, SpeechStarted

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
    #: stream uses those events for barge-in instead of running the VAD twice.
    runs_vad: bool = False
    #: Set by the stream on a session that ``runs_vad``; called with each VAD event.
    on_vad_event: Callable[[SpeechStarted | SpeechEnded], None] | None = None

    def __init__(self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.listener = listener

    @property
    def speech_offset_ms(self) -> int | None:
        """How much of the stream (ms) the session's own VAD has heard; None if it runs none.

        Times a speech start the backend reports (``on_speech_started`` carries no offset).
        """
        return None

    async def connect(self) -> None:
        """Open the session; raise if it cannot be opened (the call goes on without it)."""
        raise NotImplementedError("subclasses of BaseTranscriptionSession must provide connect()")

    def send_audio(self, audio: bytes) -> None:
        """Take 8 kHz mu-law audio. Never blocks, never raises."""
        raise NotImplementedError("subclasses of BaseTranscriptionSession must provide send_audio()")

    async def close(self) -> None:
        """Flush and release; safe to call twice, and without ``connect()``."""
        raise NotImplementedError("subclasses of BaseTranscriptionSession must provide close()")


class BaseTranscriptionBackend(Backend):
    #: Whether final transcripts will come (False for backends that drop audio);
    #: without them the local VAD alone ends a caller utterance.
    produces_transcripts: bool = True

    def create_session(
        self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener
    ) -> BaseTranscriptionSession:
        raise NotImplementedError(
            "subclasses of BaseTranscriptionBackend must provide a create_session() method"
        )
