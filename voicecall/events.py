"""The ``CallEvent.type`` values voicecall writes: one per Twilio callback, under ``twilio.``.

The prefix keeps them apart from the rows other apps write about the same
call (mediastream's own ``stream.started``/``stream.stopped`` describe the
socket it holds; ``twilio.stream.started`` is Twilio's status callback).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TwilioEvent", "ControlEvent", "STREAM_STATUS_EVENTS"]


class TwilioEvent(StrEnum):
    CALL_VOICE = "twilio.call.voice"
    CALL_STATUS = "twilio.call.status"
    STREAM_STARTED = "twilio.stream.started"
    STREAM_STOPPED = "twilio.stream.stopped"
    STREAM_ERROR = "twilio.stream.error"
    #: A stream status callback with a ``StreamEvent`` Twilio does not document.
    STREAM_OTHER = "twilio.stream.other"
    #: The answering-machine detection callback (``AnsweredBy``).
    CALL_AMD = "twilio.call.amd"
    #: A recording status callback.
    RECORDING_STATUS = "twilio.recording.status"


class ControlEvent(StrEnum):
    """What this app asked Twilio to do with a call (voicecall.control), under ``control.``."""

    PLACED = "control.placed"
    HUNG_UP = "control.hung_up"
    TRANSFERRED = "control.transferred"
    VOICEMAIL = "control.voicemail"
    RECORDING_STARTED = "control.recording_started"
    RECORDING_STOPPED = "control.recording_stopped"
    TIME_LIMIT = "control.time_limit"
    FAILED = "control.failed"


#: Twilio's ``StreamEvent`` values and the event type each is recorded as.
STREAM_STATUS_EVENTS: dict[str, TwilioEvent] = {
    "stream-started": TwilioEvent.STREAM_STARTED,
    "stream-stopped": TwilioEvent.STREAM_STOPPED,
    "stream-error": TwilioEvent.STREAM_ERROR,
}
