"""A transcription backend that hears nothing: audio is accepted and dropped.

For load tests (the media path without any speech-to-text cost) and for
speak-only deployments that never need a transcript. Sessions connect
instantly and never call the listener.
"""

from __future__ import annotations

from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = ["DiscardBackend", "DiscardSession"]


class DiscardSession(BaseTranscriptionSession):
    """Counts the audio it drops (handy in load tests), nothing else."""

    def __init__(self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener) -> None:
        super().__init__(stream_sid=stream_sid, call_sid=call_sid, listener=listener)
        self.received_bytes = 0
        self.closed = False

    async def connect(self) -> None:
        """Ready at once."""

    def send_audio(self, audio: bytes) -> None:
        """Drop the audio."""
        if not self.closed:
            self.received_bytes += len(audio)

    async def close(self) -> None:
        """Nothing to release."""
        self.closed = True


class DiscardBackend(BaseTranscriptionBackend):
    """Makes :class:`DiscardSession` objects; takes no options."""

    produces_transcripts = False

    def create_session(
        self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener
    ) -> DiscardSession:
        return DiscardSession(stream_sid=stream_sid, call_sid=call_sid, listener=listener)
