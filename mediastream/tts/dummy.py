"""TTS backends for tests, benchmarks and demos: audio at once, no model, no network.

Like Django's locmem mail backend these are real backends, chosen by dotted
path (``"mediastream.tts.dummy.SilenceBackend"``). Each records the texts it
was asked to speak in ``texts``, and produces audio whose length follows the
text (``ms_per_char``, at least ``min_ms``) unless ``duration_ms`` fixes it.
Durations are rounded up to whole 20 ms frames, so the mu-law output is
always a whole number of Twilio frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

import numpy as np

from .base import AudioChunk, BaseTTSBackend

__all__ = ["ConstantBackend", "SilenceBackend", "ToneBackend"]

logger = logging.getLogger(__name__)

_FRAME_MS = 20


class _DurationBackend(BaseTTSBackend):
    """Shared option handling: how long the "speech" for a text lasts."""

    def __init__(
        self,
        *,
        ms_per_char: float = 60.0,
        min_ms: float = 200.0,
        duration_ms: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("ms_per_char", ms_per_char), ("min_ms", min_ms)):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if duration_ms is not None and duration_ms < 0:
            raise ValueError(f"duration_ms must not be negative, got {duration_ms}")
        self.ms_per_char = ms_per_char
        self.min_ms = min_ms
        self.duration_ms = duration_ms
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
        value: int = 1000,
        sample_rate: int = 24000,
        duration_ms: float | None = None,
        ms_per_char: float = 60.0,
        min_ms: float = 200.0,
    ) -> None:
        super().__init__(ms_per_char=ms_per_char, min_ms=min_ms, duration_ms=duration_ms)
        if not -32768 <= value <= 32767:
            raise ValueError(f"value must fit in int16, got {value}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.value = value
        self.sample_rate = sample_rate

    def render(self, text: str) -> AudioChunk:
        samples = np.full(self.samples_for(text, self.sample_rate), self.value, dtype="<i2")
        return AudioChunk(samples.tobytes(), "pcm_s16le", self.sample_rate)


class ToneBackend(_DurationBackend):
    """A sine tone as PCM16 LE: audible in a real call, easy to find in a recording."""

    def __init__(
        self,
        *,
        frequency: float = 440.0,
        amplitude: int = 8000,
        sample_rate: int = 24000,
        duration_ms: float | None = None,
        ms_per_char: float = 60.0,
        min_ms: float = 200.0,
    ) -> None:
        super().__init__(ms_per_char=ms_per_char, min_ms=min_ms, duration_ms=duration_ms)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not 0 < frequency < sample_rate / 2:
            raise ValueError(
                f"frequency must be between 0 and half the sample rate, got {frequency}"
            )
        if not 0 <= amplitude <= 32767:
            raise ValueError(f"amplitude must be within 0..32767, got {amplitude}")
        self.frequency = frequency
        self.amplitude = amplitude
        self.sample_rate = sample_rate

    def render(self, text: str) -> AudioChunk:
        t = np.arange(self.samples_for(text, self.sample_rate)) / self.sample_rate
        tone = np.rint(self.amplitude * np.sin(2 * np.pi * self.frequency * t))
        return AudioChunk(tone.astype("<i2").tobytes(), "pcm_s16le", self.sample_rate)
