"""Apply what Twilio's webhooks say to the call records, consistently under concurrency.

Call status callbacks are separate HTTP requests with no arrival-order
guarantee, and several daphne processes may handle them at once. Every update
here locks the call row (:func:`locked_calls`) and follows three rules:

* a status callback whose ``SequenceNumber`` is not above the last applied one
  changes nothing;
* without a ``SequenceNumber`` (voice webhooks, number-level callbacks) a status
  only moves forward: queued/initiated, ringing, in-progress, then terminal;
* a terminal call never changes status again.

Callers run these functions inside ``transaction.atomic()``. Twilio is the
source of truth, so a signed callback for an unknown CallSid creates the call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from email.utils import parsedate_to_datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .events import STREAM_STATUS_EVENTS, TwilioEvent
from .logsafe import sanitize
from .models import TERMINAL_STATUSES, Call, CallEvent, CallStatus, MediaStream
from .tokens import mint_stream_token

__all__ = [
    "STATUS_RANK",
    "StatusChange",
    "VoiceOutcome",
    "StatusOutcome",
    "MAX_INTEGER",
    "storable_text",
    "clean_param",
    "parse_status",
    "parse_int",
    "parse_timestamp",
    "payload_from",
    "locked_calls",
    "lock_call",
    "apply_status",
    "close_open_streams",
    "record_voice_webhook",
    "record_call_status",
    "record_stream_status",
]

logger = logging.getLogger(__name__)

#: Progress order used when a request carries no SequenceNumber.
STATUS_RANK: dict[str, int] = {
    CallStatus.QUEUED: 0,
    CallStatus.INITIATED: 0,
    CallStatus.RINGING: 1,
    CallStatus.IN_PROGRESS: 2,
    **{status: 3 for status in TERMINAL_STATUSES},
}

CALL_ENDED_REASON = "call ended"


@dataclass(frozen=True)
class StatusChange:
    """Result of :func:`apply_status`."""

    applied: bool
    previous_status: str
    status: str

    @property
    def changed(self) -> bool:
        return self.applied and self.previous_status != self.status


@dataclass(frozen=True)
class VoiceOutcome:
    """Result of :func:`record_voice_webhook`.

    ``token`` is None when the call has ended or has a live stream; then
    ``live_stream`` names that stream's SID ("" when the call has ended).
    """

    call: Call
    created: bool
    change: StatusChange | None
    token: str | None
    live_stream: str = ""


@dataclass(frozen=True)
class StatusOutcome:
    """Result of :func:`record_call_status`."""

    call: Call
    created: bool
    change: StatusChange | None


# --- Parsing Twilio's form values ----------------------------------------------------
# Every value Twilio sends is stored in PostgreSQL, which refuses NUL in text and
# JSON and whose integer columns end at 2**31 - 1: what cannot be stored is
# cleaned (text) or treated as absent (numbers, timestamps), never a 500.

#: The largest value a PostgreSQL ``integer`` column holds (SequenceNumber, CallDuration).
MAX_INTEGER = 2**31 - 1
_DECIMAL = re.compile(r"[0-9]{1,10}")


def storable_text(value: Any) -> str:
    """``str(value)`` without NUL characters or lone surrogates (replaced by U+FFFD)."""
    text = str(value).replace("\x00", "")
    if not text.isascii():
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def clean_param(value: Any, max_length: int) -> str:
    """A form value fit for a CharField: storable, stripped, cut to size."""
    return storable_text(value or "").strip()[:max_length]


def parse_status(value: Any) -> str | None:
    """The :class:`CallStatus` value of ``value``, or None if Twilio sent something else."""
    text = clean_param(value, 32).lower()
    return text if text in CallStatus.values else None


def parse_int(value: Any, maximum: int = MAX_INTEGER) -> int | None:
    """A non-negative ASCII decimal up to ``maximum``, or None (absent, malformed or out of range)."""
    text = clean_param(value, 20)
    if not _DECIMAL.fullmatch(text):
        return None
    number = int(text)
    return number if number <= maximum else None


def parse_timestamp(value: Any) -> datetime | None:
    """Twilio's ``Timestamp``: RFC 2822 on call callbacks, ISO 8601 on stream callbacks.

    None unless it names an aware instant that also exists in UTC (a year-1 time
    east of Greenwich does not, and would fail when saved).
    """
    text = clean_param(value, 64)
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        try:
            parsed = parse_datetime(text)
        except (ValueError, OverflowError):
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        return None
    try:
        parsed.astimezone(dt_timezone.utc)
    except (ValueError, OverflowError):
        return None
    return parsed


def payload_from(params: Mapping[str, Any]) -> dict[str, str]:
    """Webhook params as a storable JSON dict (last value per name; names and values cleaned)."""
    return {storable_text(name): storable_text(params.get(name, "")) for name in params.keys()}


# --- Call updates ----------------------------------------------------------------------


def _identity(params: Mapping[str, Any]) -> dict[str, str]:
    return {
        "account_sid": clean_param(params.get("AccountSid"), 64),
        "direction": clean_param(params.get("Direction"), 32),
        "from_number": clean_param(params.get("From"), 64),
        "to_number": clean_param(params.get("To"), 64),
    }


def locked_calls() -> QuerySet[Call]:
    """Calls locked for update, as ``FOR NO KEY UPDATE`` where the database has it (PostgreSQL).

    That serialises every update of a call, yet leaves inserting rows that only
    reference it (events, streams) unblocked, so a webhook holding the lock and
    a stream refusal writing its event never wait on each other.
    """
    return Call.objects.select_for_update(no_key=connection.features.has_select_for_no_key_update)


def lock_call(call_sid: str, params: Mapping[str, Any]) -> tuple[Call, bool]:
    """Lock the call row for ``call_sid`` (creating it from ``params`` if new); fill blank fields."""
    identity = _identity(params)
    call, created = locked_calls().get_or_create(
        call_sid=call_sid, defaults=identity
    )
    if not created:
        blanks = [name for name, value in identity.items() if value and not getattr(call, name)]
        for name in blanks:
            setattr(call, name, identity[name])
        if blanks:
            call.save(update_fields=[*blanks, "updated_at"])
    return call, created


def close_open_streams(call: Call, reason: str = CALL_ENDED_REASON) -> int:
    """Mark the call's open media streams stopped now; return how many were open."""
    return MediaStream.objects.filter(call=call, stopped_at__isnull=True).update(
        stopped_at=timezone.now(), close_reason=reason
    )


def apply_status(
    call: Call,
    status: str,
    *,
    sequence: int | None = None,
    at: datetime | None = None,
    duration: int | None = None,
) -> StatusChange:
    """Apply ``status`` to a locked ``call`` under the ordering rules above, and save it.

    In-progress sets ``answered_at``; a terminal status sets ``ended_at`` and
    ``duration``, forgets the stream token hash and closes open streams.
    """
    change, fields = _advance(call, status, sequence=sequence, at=at, duration=duration)
    if fields:
        call.save(update_fields=fields)
    if change.applied and status in TERMINAL_STATUSES:
        close_open_streams(call)
    return change


def _advance(
    call: Call,
    status: str,
    *,
    sequence: int | None = None,
    at: datetime | None = None,
    duration: int | None = None,
) -> tuple[StatusChange, list[str]]:
    """:func:`apply_status` on the ``call`` object only: the change, and the fields to save."""
    previous = call.status
    if call.is_terminal:
        return StatusChange(False, previous, previous), []
    if sequence is not None:
        if call.last_sequence_number is not None and sequence <= call.last_sequence_number:
            return StatusChange(False, previous, previous), []
    if STATUS_RANK.get(status, 0) < STATUS_RANK.get(previous, 0):
        # A late callback: the call already got further (perhaps from the voice
        # webhook or the media stream, which carry no SequenceNumber).
        if sequence is not None:
            call.last_sequence_number = sequence
            return StatusChange(False, previous, previous), ["last_sequence_number", "updated_at"]
        return StatusChange(False, previous, previous), []

    at = at or timezone.now()
    call.status = status
    fields = ["status", "updated_at"]
    if sequence is not None:
        call.last_sequence_number = sequence
        fields.append("last_sequence_number")
    if status == CallStatus.IN_PROGRESS and call.answered_at is None:
        call.answered_at = at
        fields.append("answered_at")
    if status in TERMINAL_STATUSES:
        call.ended_at = call.ended_at or at
        call.stream_token_hash = ""  # no new stream may start on an ended call
        fields += ["ended_at", "stream_token_hash"]
        if duration is not None:
            call.duration = duration
            fields.append("duration")
    return StatusChange(True, previous, status), fields


# --- One function per webhook ----------------------------------------------------------


def record_voice_webhook(call_sid: str, params: Mapping[str, Any]) -> VoiceOutcome:
    """Create or update the call, and mint a stream token unless it has ended or has a live stream.

    A live stream (a MediaStream row not stopped) keeps its call's token
    unminted: a new one would let whoever replayed the webhook open the next
    stream. The call row lock orders this against the stream's admission.

    The usual case, the first webhook of an inbound call, is one INSERT of the
    finished row (status and token hash included); a call that already has a row
    (placed by us, or created by an earlier callback) is locked and updated. A
    call we placed (``Direction`` outbound) has its row already, so it goes
    straight to the update.
    """
    status = parse_status(params.get("CallStatus"))
    if not clean_param(params.get("Direction"), 32).startswith("outbound"):
        outcome = _insert_new_call(call_sid, params, status)
        if outcome is not None:
            return outcome
    call, created = lock_call(call_sid, params)
    change = apply_status(call, status) if status else None
    token = None
    live_stream = ""
    if not call.is_terminal:
        live_stream = (
            MediaStream.objects.filter(call=call, stopped_at__isnull=True).values_list("stream_sid", flat=True).first()
            or ""
        )
    if not call.is_terminal and not live_stream:
        token, call.stream_token_hash = mint_stream_token()
        call.save(update_fields=["stream_token_hash", "updated_at"])
    _voice_event(call, params, "stream" if token else ("live stream" if live_stream else "hangup"))
    return VoiceOutcome(call=call, created=created, change=change, token=token, live_stream=live_stream)


def _voice_event(call: Call, params: Mapping[str, Any], answer: str) -> None:
    """The ``twilio.call.voice`` event: the webhook's params and what it answered."""
    CallEvent.objects.create(call=call, type=TwilioEvent.CALL_VOICE, payload={**payload_from(params), "answer": answer})


def _insert_new_call(call_sid: str, params: Mapping[str, Any], status: str | None) -> VoiceOutcome | None:
    """Insert the row of a call first heard of in its voice webhook; None if it has one already.

    The INSERT runs in a savepoint: a row that exists (or that another process
    is inserting, which the unique index makes this one wait for) raises
    IntegrityError, and the caller takes the locking path instead. A new row
    holds no stream, so there is no live stream to look for.
    """
    call = Call(call_sid=call_sid, **_identity(params))
    change = _advance(call, status)[0] if status else None
    token = None
    if not call.is_terminal:
        token, call.stream_token_hash = mint_stream_token()
    try:
        with transaction.atomic():
            call.save(force_insert=True)
    except IntegrityError:
        return None
    _voice_event(call, params, "stream" if token else "hangup")
    return VoiceOutcome(call=call, created=True, change=change, token=token)


def record_call_status(call_sid: str, params: Mapping[str, Any]) -> StatusOutcome:
    """Apply a call status callback and record it as a ``twilio.call.status`` event."""
    call, created = lock_call(call_sid, params)
    status = parse_status(params.get("CallStatus"))
    change = None
    if status:
        change = apply_status(
            call,
            status,
            sequence=parse_int(params.get("SequenceNumber")),
            at=parse_timestamp(params.get("Timestamp")),
            duration=parse_int(params.get("CallDuration")),
        )
    payload = payload_from(params)
    payload["applied"] = bool(change and change.applied)
    CallEvent.objects.create(call=call, type=TwilioEvent.CALL_STATUS, payload=payload)
    if change is not None and not change.applied:
        logger.info(
            "Ignored status %s for call %s (now %s, SequenceNumber %s, last applied %s)",
            sanitize(status),
            sanitize(call_sid),
            call.status,
            sanitize(params.get("SequenceNumber", "")),
            call.last_sequence_number,
        )
    return StatusOutcome(call=call, created=created, change=change)


def record_stream_status(call_sid: str, params: Mapping[str, Any]) -> CallEvent | None:
    """Record a stream status callback as ``twilio.stream.<event>``; None if the call is unknown."""
    call = Call.objects.filter(call_sid=call_sid).first()
    if call is None:
        return None
    event = clean_param(params.get("StreamEvent"), 64)
    event_type = STREAM_STATUS_EVENTS.get(event, TwilioEvent.STREAM_OTHER)
    stream_sid = clean_param(params.get("StreamSid"), 64)
    stream = MediaStream.objects.filter(stream_sid=stream_sid).first() if stream_sid else None
    payload = payload_from(params)
    if "StreamError" in payload:
        payload["StreamError"] = sanitize(payload["StreamError"], limit=500)
    return CallEvent.objects.create(call=call, stream=stream, type=event_type, payload=payload)
