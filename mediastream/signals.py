"""Signals about live streams. Every one is also sent as a channel-layer event
on the call's events group (``mediastream.groups.events_group``).

All are sent with ``sender=MediaStreamConsumer`` and the keyword arguments
``call_sid`` and ``stream_sid``, plus the ones listed. Receivers run in order on
the stream's event task: keep them quick (``speak(..., wait=False)`` is fine).
"""

from django.dispatch import Signal

from .events import StreamEvent

__all__ = [
    "stream_started",
    "stream_stopped",
    "speech_started",
    "transcript_partial",
    "transcript_final",
    "dtmf_received",
    "playback_started",
    "playback_finished",
    "agent_turn_started",
    "agent_turn_checked",
    "agent_first_token",
    "agent_first_audio",
    "agent_tool_called",
    "agent_tool_result",
    "agent_reply_finished",
    "agent_reply_cancelled",
    "SIGNALS",
]

stream_started = Signal()  # tracks, custom_parameters
stream_stopped = Signal()  # close_code, close_reason
speech_started = Signal()  # offset_ms, source ("vad" or the backend)
transcript_partial = Signal()  # text
transcript_final = Signal()  # text, start_ms, end_ms
dtmf_received = Signal()  # digit
playback_started = Signal()  # item_id, text
playback_finished = Signal()  # item_id, outcome, text, error, reason, audio_seconds, ...
# The conversation engine (an agent on the call); each with turn_id and timings in ms.
agent_turn_started = Signal()  # turn_id, text, dtmf, resume (end_of_turn: the model's verdicts, when one judged)
agent_turn_checked = Signal()  # turn_id (the turn it would start), complete, probability, model_ms
agent_first_token = Signal()  # turn_id, ms
agent_first_audio = Signal()  # turn_id, ms
agent_tool_called = Signal()  # turn_id, call_id, name, arguments
agent_tool_result = Signal()  # turn_id, call_id, name, ok, output, error, ms
agent_reply_finished = Signal()  # turn_id, text, heard_text, interrupted, ms
agent_reply_cancelled = Signal()  # turn_id, reason, ms

#: The signal sent for each stream event that has one.
SIGNALS: dict[StreamEvent, Signal] = {
    StreamEvent.STREAM_STARTED: stream_started,
    StreamEvent.STREAM_STOPPED: stream_stopped,
    StreamEvent.SPEECH_STARTED: speech_started,
    StreamEvent.TRANSCRIPT_PARTIAL: transcript_partial,
    StreamEvent.TRANSCRIPT_FINAL: transcript_final,
    StreamEvent.DTMF: dtmf_received,
    StreamEvent.PLAYBACK_STARTED: playback_started,
    StreamEvent.PLAYBACK_FINISHED: playback_finished,
    StreamEvent.AGENT_TURN_STARTED: agent_turn_started,
    StreamEvent.AGENT_TURN_CHECKED: agent_turn_checked,
    StreamEvent.AGENT_FIRST_TOKEN: agent_first_token,
    StreamEvent.AGENT_FIRST_AUDIO: agent_first_audio,
    StreamEvent.AGENT_TOOL_CALLED: agent_tool_called,
    StreamEvent.AGENT_TOOL_RESULT: agent_tool_result,
    StreamEvent.AGENT_REPLY_FINISHED: agent_reply_finished,
    StreamEvent.AGENT_REPLY_CANCELLED: agent_reply_cancelled,
}
