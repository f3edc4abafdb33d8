"""TTS backends for tests, benchmarks and demos: audio at once, no model, no network.

Like Django's locmem mail backend these are real backends, chosen by dotted
path (``"mediastream.tts.dummy.SilenceBackend"``). Each records the texts it
was asked to speak in ``texts``, and produces audio whose length follows the
text (``MS_PER_CHAR``, at least ``MIN_MS``) unless ``DURATION_MS`` fixes it.
Durations are rounded up to whole 20 ms frames, so the mu-law output is
always a whole number of Twilio frames.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import numpy as np

from .base import AudioChunk, BaseTTSBackend

__all__ = ["ConstantBackend", "SilenceBackend", "ToneBackend"]

_FRAME_MS = 20


class _DurationBackend(BaseTTSBackend):
    """Shared option handling: how long the "speech" for a text lasts."""

    def __init__(
        self,
        *,
        MS_PER_CHAR: float = 60.0,
        MIN_MS: float = 200.0,
        DURATION_MS: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("MS_PER_CHAR", MS_PER_CHAR), ("MIN_MS", MIN_MS)):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if DURATION_MS is not None and DURATION_MS < 0:
            raise ValueError(f"DURATION_MS must not be negative, got {DURATION_MS}")
        self.ms_per_char = MS_PER_CHAR
        self.min_ms = MIN_MS
        self.duration_ms = DURATION_MS
        self.texts: list[str] = []

    def duration_for(self, text: str) -> float:
        """Milliseconds of audio for ``text``, a whole number of 20 ms frames."""
        if self.duration_ms is not None:
            ms = self.duration_ms
        else:
            ms = max(self.min_ms, self.ms_per_char * len(text.strip()))
        return math.ceil(ms / _FRAME_MS) * _FRAME_MS

    def samples_for(self, text: str, sample_rate: int) -> int:
        return int(round(self.duration_for(text) * sample_rate / 1000))

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.texts.append(text)
        if not text.strip():
            return
        yield self.render(text)

    def render(self, text: str) -> AudioChunk:
        raise NotImplementedError("subclasses of _DurationBackend must provide render()")


class SilenceBackend(_DurationBackend):
    """Mu-law silence (0xFF) at 8 kHz: exercises playback with nothing to resample."""

    def render(self, text: str) -> AudioChunk:
        return AudioChunk(b"\xff" * self.samples_for(text, 8000), "mulaw", 8000)


class ConstantBackend(_DurationBackend):
    """PCM16 LE of one constant value at ``sample_rate``.

    A constant survives resampling exactly, so tests can assert on the bytes
    Twilio receives: value 1000 becomes frames of 0xCE, 0 becomes 0xFF.
    """

    def __init__(
        self,
        *,
        VALUE: int = 1000,
        SAMPLE_RATE: int = 24000,
        DURATION_MS: float | None = None,
        MS_PER_CHAR: float = 60.0,
        MIN_MS: float = 200.0,
    ) -> None:
        super().__init__(MS_PER_CHAR=MS_PER_CHAR, MIN_MS=MIN_MS, DURATION_MS=DURATION_MS)
        if not -32768 <= VALUE <= 32767:
            raise ValueError(f"VALUE must fit in int16, got {VALUE}")
        if SAMPLE_RATE <= 0:
            raise ValueError(f"SAMPLE_RATE must be positive, got {SAMPLE_RATE}")
        self.value = VALUE
        self.sample_rate = SAMPLE_RATE

    def render(self, text: str) -> AudioChunk:
        samples = np.full(self.samples_for(text, self.sample_rate), self.value, dtype="<i2")
        return AudioChunk(samples.tobytes(), "pcm_s16le", self.sample_rate)


class ToneBackend(_DurationBackend):
    """A sine tone as PCM16 LE: audible in a real call, easy to find in a recording."""

    def __init__(
        self,
        *,
        FREQUENCY: float = 440.0,
        AMPLITUDE: int = 8000,
        SAMPLE_RATE: int = 24000,
        DURATION_MS: float | None = None,
        MS_PER_CHAR: float = 60.0,
        MIN_MS: float = 200.0,
    ) -> None:
        super().__init__(MS_PER_CHAR=MS_PER_CHAR, MIN_MS=MIN_MS, DURATION_MS=DURATION_MS)
        if SAMPLE_RATE <= 0:
            raise ValueError(f"SAMPLE_RATE must be positive, got {SAMPLE_RATE}")
        if not 0 < FREQUENCY < SAMPLE_RATE / 2:
            raise ValueError(f"FREQUENCY must be between 0 and half the sample rate, got {FREQUENCY}")
        if not 0 <= AMPLITUDE <= 32767:
            raise ValueError(f"AMPLITUDE must be within 0..32767, got {AMPLITUDE}")
        self.frequency = FREQUENCY
        self.amplitude = AMPLITUDE
        self.sample_rate = SAMPLE_RATE

    def render(self, text: str) -> AudioChunk:
        t = np.arange(self.samples_for(text, self.sample_rate)) / self.sample_rate
        tone = np.rint(self.amplitude * np.sin(2 * np.pi * self.frequency * t))
        return AudioChunk(tone.astype("<i2").tobytes(), "pcm_s16le", self.sample_rate)
