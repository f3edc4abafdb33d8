"""Stand-ins for what the stream session reads of the player, for pure session tests."""

from dataclasses import dataclass


@dataclass
class Silent:
    """A player state: nothing queued, playing or buffered at Twilio (unless set)."""

    busy: bool = False
    interruptible: bool = True
    unconfirmed_audio_bytes: int = 0
    mark_rtt_ms: float | None = None
