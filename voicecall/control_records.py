"""What call control writes: placed calls, ``control.*`` events, AMD results, recordings, overflow answers.

The same rules as :mod:`voicecall.records`: every write locks the call row,
Twilio is the source of truth (a signed callback for an unknown CallSid
creates the call), and a callback that arrives before the REST answer it
follows (a status callback before ``place_call`` saved its record) changes
nothing that the later write cannot complete.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from .events import ControlEvent, TwilioEvent
from .logsafe import sanitize
from .models import AnsweredBy, Call, CallEvent, Recording
from .records import StatusChange, apply_status, clean_param, lock_call, parse_int, parse_status, parse_timestamp, payload_from

__all__ = [
    "OverflowOutcome",
    "AmdOutcome",
    "RecordingOutcome",
    "RECORDING_STATUS_RANK",
    "record_placed",
    "note",
    "record_overflow",
    "record_amd",
    "record_recording_status",
    "record_recording_started",
    "record_recording_stopped",
]

logger = logging.getLogger(__name__)

#: Recording statuses in the order they can follow each other; a late callback never moves one back.
RECORDING_STATUS_RANK: dict[str, int] = {
    "in-progress": 1,
    "paused": 1,
    "stopped": 2,
    "processing": 2,
    "completed": 3,
    "absent": 3,
    "failed": 3,
    "deleted": 4,
}


@dataclass(frozen=True)
class OverflowOutcome:
    call: Call
    created: bool
    change: StatusChange | None


@dataclass(frozen=True)
class AmdOutcome:
    """``answered_by`` is None when the callback carried no AnsweredBy."""

    call: Call
    answered_by: str | None
    detection_ms: int | None


@dataclass(frozen=True)
class RecordingOutcome:
    """``changed``: the recording's status moved (a repeated or late callback leaves it)."""

    call: Call
    recording: Recording | None
    status: str
    changed: bool


# --- REST answers ------------------------------------------------------------------------


def record_placed(instance: Any, kwargs: Mapping[str, Any], *, agent, metadata, machine_detection: str) -> Call:
    """Save the Call for a call Twilio just created (``instance``: its CallInstance)."""
    identity = {
        "account_sid": clean_param(instance.account_sid, 64),
        "direction": clean_param(instance.direction or "outbound-api", 32),
        "from_number": clean_param(getattr(instance, "_from", None) or kwargs["from_"], 64),
        "to_number": clean_param(instance.to or kwargs["to"], 64),
    }
    with transaction.atomic():
        call, created = Call.objects.select_for_update().get_or_create(
            call_sid=clean_param(instance.sid, 64), defaults={**identity, "agent": agent, "metadata": metadata}
        )
        if not created:  # a callback got here first
            for name, value in identity.items():
                if value and not getattr(call, name):
                    setattr(call, name, value)
            call.agent, call.metadata = agent, metadata
            call.save()
        status = parse_status(instance.status)
        if status:
            apply_status(call, status)
        payload = {
            "to": identity["to_number"],
            "from": identity["from_number"],
            "machine_detection": machine_detection,
            "timeout": kwargs.get("timeout"),
            "time_limit": kwargs.get("time_limit"),
            "status": status or "",
        }
        CallEvent.objects.create(call=call, type=ControlEvent.PLACED, payload=payload)
    logger.info("Placed call %s to %s", call.call_sid, sanitize(identity["to_number"], 40))
    return call


def note(call_sid: str, event: ControlEvent, payload: Mapping[str, Any]) -> CallEvent | None:
    """Record what call control did to a known call (nothing for a call we have no record of)."""
    call = Call.objects.filter(call_sid=call_sid).first()
    if call is None:
        return None
    return CallEvent.objects.create(call=call, type=event, payload=dict(payload))


# --- Webhooks ------------------------------------------------------------------------------


def record_overflow(call_sid: str, params: Mapping[str, Any], reason: str) -> OverflowOutcome:
    """A voice webhook answered with the OVERFLOW fallback: record the call, mint no stream token."""
    call, created = lock_call(call_sid, params)
    status = parse_status(params.get("CallStatus"))
    change = apply_status(call, status) if status else None
    payload = payload_from(params)
    payload.update(answer="overflow", reason=sanitize(reason, 200))
    CallEvent.objects.create(call=call, type=TwilioEvent.CALL_VOICE, payload=payload)
    return OverflowOutcome(call=call, created=created, change=change)


def record_amd(call_sid: str, params: Mapping[str, Any]) -> AmdOutcome:
    """The async AMD callback: ``Call.answered_by`` and a ``twilio.call.amd`` event."""
    call, _created = lock_call(call_sid, params)
    raw = clean_param(params.get("AnsweredBy"), 32)
    answered_by = (raw if raw in AnsweredBy.values else AnsweredBy.UNKNOWN) if raw else None
    if answered_by and call.answered_by != answered_by:
        call.answered_by = answered_by
        call.save(update_fields=["answered_by", "updated_at"])
    CallEvent.objects.create(call=call, type=TwilioEvent.CALL_AMD, payload=payload_from(params))
    return AmdOutcome(call=call, answered_by=answered_by, detection_ms=parse_int(params.get("MachineDetectionDuration")))


def _apply_recording(recording: Recording, params: Mapping[str, Any], status: str) -> bool:
    """Update ``recording`` from a callback; False when ``status`` would move it back."""
    if status and RECORDING_STATUS_RANK.get(status, 0) < RECORDING_STATUS_RANK.get(recording.status, 0):
        return False
    changed = bool(status) and status != recording.status
    if status:
        recording.status = status
    url = clean_param(params.get("RecordingUrl"), 500)
    recording.url = url or recording.url
    duration = parse_int(params.get("RecordingDuration"))
    recording.duration = recording.duration if duration is None else duration
    recording.channels = parse_int(params.get("RecordingChannels")) or recording.channels
    recording.source = clean_param(params.get("RecordingSource"), 32) or recording.source
    recording.error_code = clean_param(params.get("ErrorCode"), 16) or recording.error_code
    recording.started_at = parse_timestamp(params.get("RecordingStartTime")) or recording.started_at
    recording.save()
    return changed


def record_recording_status(call_sid: str, params: Mapping[str, Any]) -> RecordingOutcome:
    """A recording status callback (or a ``<Record>`` action): the Recording row and a ``twilio.recording.status`` event."""
    call, _created = lock_call(call_sid, params)
    recording_sid = clean_param(params.get("RecordingSid"), 64)
    status = clean_param(params.get("RecordingStatus"), 16).lower()
    if not status and params.get("RecordingUrl"):
        status = "completed"  # a <Record> action: the recording is done
    CallEvent.objects.create(call=call, type=TwilioEvent.RECORDING_STATUS, payload=payload_from(params))
    if not recording_sid:
        return RecordingOutcome(call=call, recording=None, status=status, changed=False)
    recording, created = Recording.objects.select_for_update().get_or_create(
        recording_sid=recording_sid, defaults={"call": call}
    )
    changed = _apply_recording(recording, params, status)
    return RecordingOutcome(call=call, recording=recording, status=recording.status, changed=changed or created)


def record_recording_started(call_sid: str, instance: Any) -> Recording:
    """Save the Recording Twilio just created on the call."""
    with transaction.atomic():
        call, _created = lock_call(call_sid, {})
        recording, created = Recording.objects.select_for_update().get_or_create(
            recording_sid=clean_param(instance.sid, 64), defaults={"call": call}
        )
        status = clean_param(instance.status, 16)
        if created or RECORDING_STATUS_RANK.get(status, 0) >= RECORDING_STATUS_RANK.get(recording.status, 0):
            recording.status = status or recording.status
            recording.channels = recording.channels or instance.channels
            recording.source = recording.source or clean_param(instance.source, 32)
            recording.save()
        CallEvent.objects.create(
            call=call, type=ControlEvent.RECORDING_STARTED, payload={"RecordingSid": recording.recording_sid, "status": status}
        )
    return recording


def record_recording_stopped(call_sid: str, instance: Any) -> str:
    """Note a stopped recording; its row moves to "stopped" unless a callback already said more."""
    recording_sid = clean_param(instance.sid, 64)
    status = clean_param(instance.status, 16) or "stopped"
    with transaction.atomic():
        recording = Recording.objects.select_for_update().filter(recording_sid=recording_sid).first()
        if recording is not None and RECORDING_STATUS_RANK.get(status, 0) > RECORDING_STATUS_RANK.get(recording.status, 0):
            recording.status = status
            recording.save(update_fields=["status", "updated_at"])
        note(call_sid, ControlEvent.RECORDING_STOPPED, {"RecordingSid": recording_sid, "status": status})
    return status
