"""The TTS backend contract: text in, an async stream of audio chunks out.

A backend is a :class:`~mediastream.backends.Backend` (``__init__(**OPTIONS)``,
``warm_up()``, ``close()``/``aclose()``) with one async generator method,
``synthesize(text)``. Chunks may be 16-bit PCM at any rate or 8 kHz mu-law;
playback converts them. Subclasses must implement ``synthesize``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from ..backends.base import Backend

__all__ = ["AudioChunk", "BaseTTSBackend", "TTSError"]


class TTSError(Exception):
    """Synthesis failed; the message says why (shown in call events)."""


@dataclass(frozen=True, slots=True)
class AudioChunk:
    data: bytes
    encoding: Literal["pcm_s16le", "mulaw"] = "pcm_s16le"
    sample_rate: int = 8000


class BaseTTSBackend(Backend):
    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Yield audio for ``text`` as soon as it is available; blank text yields nothing.

        A failure of the engine or the vendor raises :class:`TTSError`. The caller
        may stop iterating at any point (barge-in); the backend stays usable.
        """
        raise NotImplementedError(
            "subclasses of BaseTTSBackend must provide a synthesize() method"
        )
