"""The browser's audio format, PCM16 mono 24 kHz, to and from what the voices speak.

The embedded speech-to-text and the phone-call speech agents take 8 kHz
mu-law; TTS backends give PCM16 at their own rate or 8 kHz mu-law. The
converters here are streaming (soxr HQ through :class:`mediastream.audio.Resampler`,
state kept across pieces), one per direction per session.
"""

from __future__ import annotations

import numpy as np

from ..audio import SAMPLE_RATE as MULAW_RATE
from ..audio import AudioChunkLike, AudioFormatError, Resampler, ulaw_decode, ulaw_encode

__all__ = ["BYTES_PER_SECOND", "RATE", "ToMulaw", "ToPcm24", "seconds"]

RATE = 24000
BYTES_PER_SECOND = RATE * 2


def seconds(pcm: bytes) -> float:
    """How long ``pcm`` (PCM16 24 kHz) plays."""
    return len(pcm) / BYTES_PER_SECOND


class ToMulaw:
    """PCM16 24 kHz in pieces → 8 kHz mu-law in pieces (the caller's audio for STT, VAD, phone agents)."""

    def __init__(self) -> None:
        self._resampler = Resampler(RATE, MULAW_RATE)

    def feed(self, pcm: bytes) -> bytes:
        out = self._resampler.process(pcm)
        return ulaw_encode(out) if out.size else b""


class ToPcm24:
    """Speech out (TTS ``AudioChunk``s, or 8 kHz mu-law) → PCM16 24 kHz, piece by piece.

    ``flush()`` ends an utterance (the resampler's tail); a rate or encoding
    change flushes the old state first. An odd trailing byte waits for the
    next chunk, so a vendor may cut its stream anywhere.
    """

    def __init__(self) -> None:
        self._resampler: Resampler | None = None
        self._odd = b""

    def feed_chunk(self, chunk: AudioChunkLike) -> bytes:
        if chunk.encoding == "mulaw":
            if chunk.sample_rate != MULAW_RATE:
                raise AudioFormatError(f"mu-law audio must be {MULAW_RATE} Hz, got {chunk.sample_rate} Hz")
            return self.feed_mulaw(bytes(chunk.data))
        if chunk.encoding != "pcm_s16le":
            raise AudioFormatError(f"unsupported TTS audio encoding {chunk.encoding!r}: use 'pcm_s16le' or 'mulaw'")
        data = self._odd + bytes(chunk.data)
        cut = len(data) & ~1
        self._odd = data[cut:]
        return self._resample(chunk.sample_rate, np.frombuffer(data[:cut], dtype="<i2"))

    def feed_mulaw(self, mulaw: bytes) -> bytes:
        return self._resample(MULAW_RATE, ulaw_decode(mulaw))

    def flush(self) -> bytes:
        self._odd = b""
        if self._resampler is None:
            return b""
        out = self._resampler.flush()
        self._resampler = None
        return out.astype("<i2").tobytes()

    def _resample(self, rate: int, samples: np.ndarray) -> bytes:
        prefix = b""
        if self._resampler is not None and self._resampler.in_rate != rate:
            prefix = self.flush()
        if self._resampler is None:
            self._resampler = Resampler(rate, RATE)
        if not samples.size:
            return prefix
        return prefix + self._resampler.process(samples).astype("<i2").tobytes()
