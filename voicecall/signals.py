"""Signals sent by the Twilio webhooks, after the database transaction commits.

Receivers get the saved :class:`~voicecall.models.Call`; a failing receiver is
logged and does not change the answer Twilio already gets.
"""

from django.dispatch import Signal

__all__ = ["call_status_changed", "call_started"]

# sender=Call, call=<Call>, status=<new CallStatus value>,
# previous_status=<old value, or None when the webhook created the record>
call_status_changed = Signal()

# sender=Call, call=<Call>: the voice webhook answered with <Connect><Stream>
# (once per non-replayed voice webhook).
call_started = Signal()
