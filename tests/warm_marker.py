"""A TTS backend for a real daphne that leaves a file when it is warmed up (the process's once-per-process warm-up)."""

from __future__ import annotations

from pathlib import Path

from mediastream.tts.dummy import ConstantBackend


class MarkedWarmUpBackend(ConstantBackend):
    def __init__(self, *, MARKER: str, **options) -> None:
        super().__init__(**options)
        self.marker = Path(MARKER)

    async def warm_up(self) -> None:
        self.marker.write_text("warmed up\n")
