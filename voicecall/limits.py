"""The maximum call duration: end calls answered more than ``VOICECALL["MAX_CALL_SECONDS"]`` ago, politely.

Ending a call is a Calls update: Twilio replaces the stream with
``MAX_CALL_GOODBYE`` spoken and hangs up. Before that, the
``call_time_limit_reached`` signal is sent (synchronously); a receiver that
says its own goodbye on the stream (mediastream can, in the agent's voice)
and waits for it to play returns True, and the call is then hung up without
Twilio's line. :func:`end_overdue_calls` runs from ``manage.py
end_overdue_calls`` (cron, every minute) or any periodic task; calls placed
by ``place_call`` also carry the limit plus ``MAX_CALL_GRACE_SECONDS`` as
Twilio's ``TimeLimit``, so Twilio ends them even if nothing here runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from .conf import voicecall_settings
from .control_records import note
from .events import ControlEvent
from .models import Call, CallStatus
from .signals import call_time_limit_reached

__all__ = ["EndedCall", "deadline", "overdue_calls", "end_overdue_calls"]

logger = logging.getLogger(__name__)

REASON = "time limit"


@dataclass(frozen=True)
class EndedCall:
    """One call :func:`end_overdue_calls` acted on; ``error`` says why Twilio refused."""

    call_sid: str
    goodbye_by_receiver: bool
    error: str = ""


def _limit() -> int | None:
    limit = voicecall_settings.MAX_CALL_SECONDS
    return int(limit) if limit else None


def deadline(call: Call) -> datetime | None:
    """When ``call`` reaches the limit (None: no limit, or not answered yet)."""
    limit = _limit()
    if limit is None or call.answered_at is None:
        return None
    return call.answered_at + timedelta(seconds=limit)


def overdue_calls(now: datetime | None = None) -> QuerySet[Call]:
    """In-progress calls answered more than MAX_CALL_SECONDS before ``now`` and not yet ended for it."""
    limit = _limit()
    if limit is None:
        return Call.objects.none()
    cutoff = (now or timezone.now()) - timedelta(seconds=limit)
    overdue = Call.objects.filter(status=CallStatus.IN_PROGRESS, answered_at__lte=cutoff)
    return overdue.exclude(events__type=ControlEvent.TIME_LIMIT).order_by("answered_at")


def _receiver_said_goodbye(call: Call, limit: int) -> bool:
    responses = call_time_limit_reached.send_robust(sender=Call, call=call, limit_seconds=limit)
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error("call_time_limit_reached receiver %r failed for %s: %r", receiver, call.call_sid, response)
    return any(response is True for _, response in responses)


def end_overdue_calls(now: datetime | None = None) -> list[EndedCall]:
    """End every overdue call (a goodbye, then a hang-up) once; a call Twilio refused to end is tried again next run."""
    from .control import CallControlError, end_call

    limit = _limit()
    ended: list[EndedCall] = []
    for call in overdue_calls(now):
        said = _receiver_said_goodbye(call, limit or 0)
        goodbye = "" if said else str(voicecall_settings.MAX_CALL_GOODBYE or "")
        try:
            end_call(call.call_sid, goodbye=goodbye, reason=REASON)
        except CallControlError as exc:
            logger.warning("Could not end overdue call %s: %s", call.call_sid, exc)
            ended.append(EndedCall(call.call_sid, said, str(exc)))
            continue
        note(call.call_sid, ControlEvent.TIME_LIMIT, {"limit_seconds": limit, "goodbye_by_receiver": said})
        logger.info("Ended call %s at its time limit (%s s)", call.call_sid, limit)
        ended.append(EndedCall(call.call_sid, said))
    return ended
