"""Stream events: one name for each thing that happens on a live stream.

The same names are the Django signals (``mediastream.signals``), the messages
on a call's events group, and the ``CallEvent.type`` of the rows in the call's
event log. Twilio's own callbacks are logged by voicecall under ``twilio.*``
names, so they cannot be mistaken for these.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["StreamEvent"]


class StreamEvent(StrEnum):
    STREAM_STARTED = "stream.started"
    STREAM_STOPPED = "stream.stopped"
    STREAM_REJECTED = "stream.rejected"
    STREAM_REAPED = "stream.reaped"
    SPEECH_STARTED = "speech.started"
    TRANSCRIPT_PARTIAL = "transcript.partial"
    TRANSCRIPT_FINAL = "transcript.final"
    DTMF = "dtmf"
    PLAYBACK_QUEUED = "playback.queued"
    PLAYBACK_STARTED = "playback.started"
    PLAYBACK_FINISHED = "playback.finished"
    TRANSCRIPTION_READY = "transcription.ready"
    TRANSCRIPTION_FAILED = "transcription.failed"
    TRANSCRIPTION_ERROR = "transcription.error"
    #: Every few seconds while streaming: frames in, sequence gaps, marks and their round trip.
    STREAM_HEALTH = "stream.health"
    # The conversation engine: every step of an agent's turn, with its turn_id and timings in ms.
    AGENT_TURN_STARTED = "agent.turn.started"
    #: The end-of-turn model judged a pause in the caller's turn (MEDIASTREAM["END_OF_TURN"]).
    AGENT_TURN_CHECKED = "agent.turn.checked"
    AGENT_FIRST_TOKEN = "agent.first_token"
    AGENT_FIRST_AUDIO = "agent.first_audio"
    AGENT_TOOL_CALLED = "agent.tool.called"
    AGENT_TOOL_RESULT = "agent.tool.result"
    AGENT_REPLY_FINISHED = "agent.reply.finished"
    AGENT_REPLY_CANCELLED = "agent.reply.cancelled"

    @property
    def recorded(self) -> bool:
        """Whether announcing it writes an event-log row.

        Stream start and stop rows are written by the admission and finish
        transactions themselves; partial transcripts and health ticks are too many to keep.
        """
        return self not in _NOT_RECORDED

    @property
    def broadcast(self) -> bool:
        """Whether announcing it sends a message on the call's events group."""
        return self is not StreamEvent.PLAYBACK_QUEUED


_NOT_RECORDED = frozenset(
    {StreamEvent.STREAM_STARTED, StreamEvent.STREAM_STOPPED, StreamEvent.TRANSCRIPT_PARTIAL, StreamEvent.STREAM_HEALTH}
)
