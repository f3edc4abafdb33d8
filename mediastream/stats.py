"""Per-stream counters: frames, gaps and protocol errors.

Kept as plain attribute increments so the per-frame cost is a few
nanoseconds; stored on the MediaStream row when the stream ends.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from .audio import SAMPLE_RATE
from .protocol import Media

__all__ = ["StreamStats"]

logger = logging.getLogger(__name__)


@dataclass
class StreamStats:
    max_warnings: int = 5
    connected: bool = False
    media_frames: int = 0
    media_bytes: int = 0
    media_before_start: int = 0
    frames_direct: int = 0  # frames daphne handed to the stream without its queue (mediastream.dispatch)
    sequence_gaps: int = 0  # sequenceNumbers skipped
    sequence_reorders: int = 0  # sequenceNumbers going backwards or repeating
    timestamp_gaps: int = 0  # media.timestamp jumps beyond the previous frame's end
    timestamp_gap_ms: int = 0
    marks: int = 0
    dtmf: int = 0
    protocol_errors: dict[str, int] = field(default_factory=dict)
    _warnings_logged: int = 0
    _last_sequence: int | None = None
    _next_timestamp: int | None = None

    def media(self, msg: Media) -> None:
        self.media_frames += 1
        size = len(msg.payload)
        self.media_bytes += size
        seq = msg.sequence_number
        if seq is not None:
            last = self._last_sequence
            if last is not None:
                if seq > last + 1:
                    self.sequence_gaps += seq - last - 1
                elif seq <= last:
                    self.sequence_reorders += 1
            self._last_sequence = seq if last is None or seq > last else last
        ts = msg.timestamp
        if ts is not None:
            expected = self._next_timestamp
            # One frame of tolerance: Twilio's timestamps are in whole milliseconds.
            if expected is not None and ts > expected + 20:
                self.timestamp_gaps += 1
                self.timestamp_gap_ms += ts - expected
            self._next_timestamp = ts + size * 1000 // SAMPLE_RATE

    def sequence(self, seq: int | None) -> None:
        """Track sequence numbers of non-media messages (one counter for all events)."""
        if seq is not None and (self._last_sequence is None or seq > self._last_sequence):
            if self._last_sequence is not None and seq > self._last_sequence + 1:
                self.sequence_gaps += seq - self._last_sequence - 1
            self._last_sequence = seq

    def protocol_error(self, kind: str) -> bool:
        """Count a bad frame; True while it should still be logged (rate limit)."""
        self.protocol_errors[kind] = self.protocol_errors.get(kind, 0) + 1
        if self._warnings_logged < self.max_warnings:
            self._warnings_logged += 1
            return True
        return False

    @property
    def protocol_error_count(self) -> int:
        return sum(self.protocol_errors.values())

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_") and k != "max_warnings"}

    def log_summary(self, stream_sid: str) -> None:
        suppressed = self.protocol_error_count - self._warnings_logged
        if suppressed > 0:
            logger.warning(
                "Media stream %s: %d more bad frames not logged (%s)",
                stream_sid or "(no start)",
                suppressed,
                ", ".join(f"{k}={v}" for k, v in sorted(self.protocol_errors.items())),
            )
