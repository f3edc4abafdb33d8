"""Signals sent by the Twilio webhooks, after the database transaction commits.

Receivers get the saved :class:`~voicecall.models.Call`; a failing receiver is
logged and does not change the answer Twilio already gets.
"""

from django.dispatch import Signal

__all__ = ["call_status_changed", "call_started", "call_answered_by", "call_time_limit_reached", "recording_status_changed"]

# sender=Call, call=<Call>, status=<new CallStatus value>,
# previous_status=<old value, or None when the webhook created the record>
call_status_changed = Signal()

# sender=Call, call=<Call>: the voice webhook answered with <Connect><Stream>
# (once per non-replayed voice webhook).
call_started = Signal()

# sender=Call, call=<Call>, answered_by=<AnsweredBy value>,
# detection_ms=<MachineDetectionDuration, or None>: answering-machine detection
# on an outbound call decided (e.g. an agent leaves a message after "machine_end_beep").
call_answered_by = Signal()

# sender=Call, call=<Call>, limit_seconds=<VOICECALL["MAX_CALL_SECONDS"]>: sent
# synchronously by voicecall.limits just before it ends the call. A receiver that
# said its own goodbye on the stream (and waited for it to play) returns True;
# then the call is hung up without Twilio's MAX_CALL_GOODBYE.
call_time_limit_reached = Signal()

# sender=Call, call=<Call>, recording=<Recording>, status=<RecordingStatus>:
# a recording status callback changed a recording (e.g. "completed" with its URL).
recording_status_changed = Signal()
