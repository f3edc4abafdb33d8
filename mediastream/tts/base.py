"""The TTS backend contract: text in, an async stream of audio chunks out.

A backend is a class with ``__init__(**OPTIONS)`` and one async generator
method, ``synthesize(text)``. Chunks may be 16-bit PCM at any rate or 8 kHz
mu-law; playback converts them. Subclasses must implement ``synthesize``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["AudioChunk", "BaseTTSBackend", "TTSError"]


class TTSError(Exception):
    """Synthesis failed; the message says why (shown in call events)."""


@dataclass(frozen=True, slots=True)
class AudioChunk:
    data: bytes
    encoding: Literal["pcm_s16le", "mulaw"] = "pcm_s16le"
    sample_rate: int = 8000


class BaseTTSBackend:
    def __init__(self, **options) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Yield audio for ``text`` as soon as it is available."""
        raise NotImplementedError(
            "subclasses of BaseTTSBackend must provide a synthesize() method"
        )

    async def warm_up(self) -> None:
        """Load models or start workers ahead of the first call (optional)."""

    async def aclose(self) -> None:
        """Release processes or connections held by the backend."""
