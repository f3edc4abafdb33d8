"""One stream's share of the process metrics, taken from its events and counters, never per frame.

The stream's parts hand every announcement to :meth:`StreamMeter.observe`
before the announcer (a dict lookup for the events it does not measure). At
each ``stream.health`` tick and at the stream's end the meter adds what the
stream's plain counters (:class:`~mediastream.stats.StreamStats`, the player's
bytes sent) grew by since the last time. Latencies come from the events that
carry them; stream audio time (the caller's bytes received, 8 per ms) is the
clock the transcription and VAD offsets are on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..audio import FRAME_BYTES, SAMPLE_RATE
from ..events import StreamEvent
from ..session import Announce
from ..stats import StreamStats
from . import (
    BARGE_IN_LATENCY,
    FRAMES_IN,
    FRAMES_OUT,
    MARK_ROUND_TRIP,
    PLAYBACK_QUEUE_DEPTH,
    SEQUENCE_GAPS,
    STREAMS_LIVE,
    STT_FINAL_LATENCY,
    VENDOR_ERRORS,
    VOICE_TO_VOICE,
    VOICE_TO_VOICE_STAGE,
    Stage,
)

__all__ = ["StreamMeter"]

logger = logging.getLogger(__name__)


class StreamMeter:
    """Counters' deltas and latencies of one live stream; counts it as live from :meth:`start` to :meth:`close`."""

    def __init__(
        self,
        stats: StreamStats,
        *,
        audio_bytes_sent: Callable[[], int],
        queue_depth: Callable[[], int],
        stt_backend: str,
        tts_backend: Callable[[], str],
        agent_backend: str = "",
    ) -> None:
        self.stats = stats
        self._audio_bytes_sent = audio_bytes_sent
        self._queue_depth = queue_depth
        self.stt_backend = stt_backend
        self._tts_backend = tts_backend  # asked when a synthesis fails (the backend is built lazily)
        self.agent_backend = agent_backend
        self._live = False
        # What has been added to the process counters so far.
        self._frames_in = self._gaps = self._frames_out = self._queued = self._marks = 0
        self._speech_ms: int | None = None  # where the caller's latest speech began, until it barges in
        self._speech_end_ms: int | None = None  # where the latest final's speech ended (stream audio time)
        self._turn: list[Any] | None = None  # [turn_id, stt seconds or None, first token ms or None]
        self._stt_errors = 0
        self._on = {
            StreamEvent.STREAM_HEALTH: self._health,
            StreamEvent.SPEECH_STARTED: self._speech_started,
            StreamEvent.PLAYBACK_FINISHED: self._playback_finished,
            StreamEvent.TRANSCRIPT_FINAL: self._final,
            StreamEvent.AGENT_TURN_STARTED: self._turn_started,
            StreamEvent.AGENT_FIRST_TOKEN: self._first_token,
            StreamEvent.AGENT_FIRST_AUDIO: self._first_audio,
            StreamEvent.AGENT_REPLY_CANCELLED: self._reply_cancelled,
            StreamEvent.TRANSCRIPTION_FAILED: self._stt_failed,
            StreamEvent.TRANSCRIPTION_ERROR: self._stt_error,
        }

    def start(self) -> None:
        if not self._live:
            self._live = True
            STREAMS_LIVE.inc()

    def observe(self, announcement: Announce) -> None:
        """One announcement of the stream, as the session made it (the meter never breaks a stream)."""
        handler = self._on.get(announcement.event)
        if handler is None:
            return
        try:
            handler(announcement.data)
        except Exception:
            logger.exception("Stream metrics: observing %s failed", announcement.event)

    def close(self) -> None:
        """The stream ends: its last deltas go in, and it is no longer live nor holds queued items."""
        if not self._live:
            return
        self._live = False
        self._add_counts()
        PLAYBACK_QUEUE_DEPTH.dec(self._queued)
        self._queued = 0
        STREAMS_LIVE.dec()

    # --- counters -------------------------------------------------------------------

    def _stream_ms(self) -> int:
        """Stream audio time: the caller's audio received so far."""
        return self.stats.media_bytes * 1000 // SAMPLE_RATE

    def _add_counts(self) -> None:
        stats = self.stats
        frames_in, gaps = stats.media_frames, stats.sequence_gaps
        frames_out = self._audio_bytes_sent() // FRAME_BYTES
        if frames_in > self._frames_in:
            FRAMES_IN.inc(frames_in - self._frames_in)
        if gaps > self._gaps:
            SEQUENCE_GAPS.inc(gaps - self._gaps)
        if frames_out > self._frames_out:
            FRAMES_OUT.inc(frames_out - self._frames_out)
        self._frames_in, self._gaps, self._frames_out = frames_in, gaps, frames_out

    def _health(self, data: dict) -> None:
        self._add_counts()
        queued = self._queue_depth()
        if queued != self._queued:
            PLAYBACK_QUEUE_DEPTH.inc(queued - self._queued)
            self._queued = queued
        marks, rtt = data.get("marks", 0), data.get("mark_rtt_ms")
        if marks > self._marks and rtt is not None:  # an echo came since the last tick
            MARK_ROUND_TRIP.observe(rtt / 1000)
        self._marks = marks

    # --- latencies ------------------------------------------------------------------

    def _speech_started(self, data: dict) -> None:
        if data.get("offset_ms") is not None:
            self._speech_ms = data["offset_ms"]

    def _playback_finished(self, data: dict) -> None:
        outcome = data.get("outcome")
        if outcome == "interrupted" and data.get("reason") == "barge-in" and self._speech_ms is not None:
            BARGE_IN_LATENCY.observe(max(0, self._stream_ms() - self._speech_ms) / 1000)
            self._speech_ms = None  # the other items that barge-in cut off are the same utterance
        elif outcome == "failed" and str(data.get("error", "")).startswith("synthesis"):
            VENDOR_ERRORS.labels("tts", self._tts_backend()).inc()

    def _final(self, data: dict) -> None:
        end_ms = data.get("end_ms")
        self._speech_end_ms = None
        if end_ms is None:
            return
        seconds = (self._stream_ms() - end_ms) / 1000
        if seconds >= 0:  # a backend on another clock than the stream's audio is not timed
            STT_FINAL_LATENCY.labels(self.stt_backend).observe(seconds)
            self._speech_end_ms = end_ms

    def _turn_started(self, data: dict) -> None:
        """A caller turn: its stt stage runs from the end of speech to now (a held final's wait included)."""
        end_ms, self._speech_end_ms = self._speech_end_ms, None
        stt = (self._stream_ms() - end_ms) / 1000 if data.get("text") and end_ms is not None else None
        self._turn = [data.get("turn_id"), stt, None]

    def _first_token(self, data: dict) -> None:
        turn = self._turn
        if turn is not None and turn[0] == data.get("turn_id") and turn[2] is None:
            turn[2] = data["ms"]
            VOICE_TO_VOICE_STAGE.labels(Stage.AGENT_FIRST_TOKEN).observe(data["ms"] / 1000)

    def _first_audio(self, data: dict) -> None:
        turn, self._turn = self._turn, None
        if turn is None or turn[0] != data.get("turn_id"):
            return
        _, stt, first_token_ms = turn
        ms = data["ms"]
        if first_token_ms is not None:
            VOICE_TO_VOICE_STAGE.labels(Stage.TTS_FIRST_AUDIO).observe(max(0.0, ms - first_token_ms) / 1000)
        if stt is not None:
            VOICE_TO_VOICE_STAGE.labels(Stage.STT).observe(stt)
            VOICE_TO_VOICE.observe(stt + ms / 1000)

    # --- vendor errors --------------------------------------------------------------

    def _reply_cancelled(self, data: dict) -> None:
        if str(data.get("reason", "")).startswith("agent error"):
            VENDOR_ERRORS.labels("agent", self.agent_backend or "unknown").inc()

    def _stt_error(self, data: dict) -> None:
        self._stt_errors += 1
        VENDOR_ERRORS.labels("stt", data.get("backend") or self.stt_backend).inc()

    def _stt_failed(self, data: dict) -> None:
        """The session could not connect: one error, unless the session reported it as one already."""
        if not self._stt_errors:
            self._stt_error(data)
