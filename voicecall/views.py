"""Twilio's HTTP webhooks: the voice URL, call status and stream status callbacks.

Every webhook goes through the same gate, in this order: POST only (405),
body size before parsing (413), Twilio signature against the public URL
(403), then replay protection; only a new, signed request reaches the
handler. Each refusal is one sanitised log line and writes nothing.
CSRF does not apply: the signature authenticates the request.

Decisions: a status callback for an unknown CallSid creates the call (Twilio
is the source of truth and the request is signed); a stream status callback
for an unknown call is only logged, since streams exist only for calls our
voice webhook answered. Neither ever answers 500 for an unknown call. A form
Django cannot parse (over ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` fields: 413; a
non-UTF-8 charset: 400) is refused at the gate like an oversize body. A
database that cannot serve the request (pool exhausted, server away) gets
503 with ``Retry-After``, never a 500 (voicecall.outage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial, wraps
from typing import Any

from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.db import transaction
from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.log import log_response
from django.views.decorators.csrf import csrf_exempt

from . import capacity, control_records, records
from .fallback import configured_twiml
from .conf import voicecall_settings
from .logsafe import sanitize
from .models import Call, MediaStream
from .outage import UNAVAILABLE, is_outage, outage_log, unavailable_response
from .replay import handle_once, replay_key
from .signals import call_answered_by, call_started, call_status_changed, recording_status_changed
from .twilio_auth import public_url_for, request_public_url, validate_http_request
from .twiml import TWIML_CONTENT_TYPE, connect_stream_twiml, empty_twiml, hangup_twiml, retry_twiml

__all__ = [
    "twilio_webhook",
    "voice",
    "call_status",
    "stream_status",
    "stream_status_callback_url",
    "amd_status",
    "recording_status",
]

logger = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], HttpResponse]


def _refuse(request: HttpRequest, response: HttpResponse, reason: str) -> HttpResponse:
    """Log one line for a refused request (instead of django.request's) and return ``response``."""
    log_response(
        "Refused Twilio webhook %s %s (%s): %s",
        sanitize(request.method, 10),
        sanitize(request.path),
        response.status_code,
        sanitize(reason, 200),
        response=response,
        request=request,
        logger=logger,
        level="warning",
    )
    return response


def _body_too_big(request: HttpRequest) -> bool:
    """True if the declared or actual body is over MAX_WEBHOOK_BODY_BYTES."""
    limit = int(voicecall_settings.MAX_WEBHOOK_BODY_BYTES)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return True
    try:
        return len(request.body) > limit
    except RequestDataTooBig:  # over DATA_UPLOAD_MAX_MEMORY_SIZE
        return True


def _unreadable_form(request: HttpRequest) -> HttpResponse | None:
    """413 or 400 if Django cannot parse the query or the form; None when both parse."""
    try:
        request.GET, request.POST  # noqa: B018 (parsed here, once, so no later access raises)
    except TooManyFieldsSent:
        return HttpResponse("Too many form fields", status=413, content_type="text/plain")
    except (SuspiciousOperation, BadRequest, MultiPartParserError):
        return HttpResponse("Unreadable form body", status=400, content_type="text/plain")
    return None


def _twiml(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, content_type=TWIML_CONTENT_TYPE, status=status)


def _signal_on_commit(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` once the webhook's transaction commits; receiver errors are logged."""
    transaction.on_commit(partial(signal.send, sender=Call, **kwargs), robust=True)


def _status_signal(change: records.StatusChange | None, call: Call, created: bool) -> None:
    if change is not None and change.changed:
        previous = None if created else change.previous_status
        _signal_on_commit(call_status_changed, call=call, status=change.status, previous_status=previous)


def twilio_webhook(handler: Handler) -> Handler:
    """Wrap ``handler`` in the method, size, signature and replay gate."""

    @csrf_exempt
    @wraps(handler)
    def view(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return _refuse(request, HttpResponseNotAllowed(["POST"]), "method not allowed")
        if _body_too_big(request):
            response = HttpResponse("Payload Too Large", status=413, content_type="text/plain")
            return _refuse(request, response, "body over MAX_WEBHOOK_BODY_BYTES")
        unreadable = _unreadable_form(request)
        if unreadable is not None:
            return _refuse(request, unreadable, unreadable.content.decode())
        check = validate_http_request(request)
        if not check.ok:
            response = HttpResponse("Forbidden", status=403, content_type="text/plain")
            return _refuse(request, response, check.reason)
        account = voicecall_settings.TWILIO_ACCOUNT_SID
        if account and request.POST.get("AccountSid", account) != account:
            response = HttpResponse("Forbidden", status=403, content_type="text/plain")
            return _refuse(request, response, "AccountSid is not TWILIO_ACCOUNT_SID")
        params = request.POST or request.body.decode("utf-8", errors="replace")
        key = replay_key(request_public_url(request), params)
        try:
            response, _replayed = handle_once(key, request.path, lambda: handler(request))
        except UNAVAILABLE as error:  # nothing was written: receipt and rows are one transaction
            if not is_outage(error):
                raise
            response = unavailable_response(request, error)
        else:
            outage_log.passed()
        add_never_cache_headers(response)  # the voice TwiML carries a stream token
        return response

    return view


def _call_sid(request: HttpRequest) -> str:
    return records.clean_param(request.POST.get("CallSid"), 64)


def _missing_call_sid(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("Missing CallSid", status=400, content_type="text/plain")
    return _refuse(request, response, "no CallSid")


def stream_status_callback_url() -> str:
    """Public https URL of the stream status webhook, with its trailing slash."""
    return public_url_for(reverse("voicecall:stream-status").rstrip("/") + "/")


#: The signed query parameter counting how often the voice URL found the call's stream still live.
LIVE_STREAM_RETRY_PARAMETER = "stream_retry"
#: How often (a second apart) Twilio is asked again before the call is hung up.
LIVE_STREAM_RETRIES = 3


def _live_stream_answer(request: HttpRequest, call_sid: str, stream_sid: str) -> HttpResponse:
    """The answer to a voice webhook for a call whose stream is live: never a new token.

    Twilio asks for a call's TwiML only when it is not (or no longer) running
    a stream, so a request that finds one live is either a replay, whose sender
    must get no token, or Twilio after a redirect that beat the stream's stop
    to the database. Pause a second and redirect to the voice URL with a retry
    count in the (signed) query: Twilio gets a stream once the stop is
    recorded, a replayer gets nothing usable, and no call is lost to a race.
    After LIVE_STREAM_RETRIES tries the stream row is stale, and the call is hung up.
    """
    retry = min(records.parse_int(request.GET.get(LIVE_STREAM_RETRY_PARAMETER)) or 0, LIVE_STREAM_RETRIES)
    if retry >= LIVE_STREAM_RETRIES:
        logger.warning(
            "Voice webhook for call %s: stream %s still live after %d retries; hanging up",
            sanitize(call_sid),
            sanitize(stream_sid),
            retry,
        )
        return _twiml(hangup_twiml())
    logger.warning(
        "Voice webhook for call %s while its stream %s is live (a replay, or a redirect racing the stream's stop): "
        "no new token, retry %d",
        sanitize(call_sid),
        sanitize(stream_sid),
        retry + 1,
    )
    path = reverse("voicecall:voice").rstrip("/") + "/"
    return _twiml(retry_twiml(public_url_for(path, f"{LIVE_STREAM_RETRY_PARAMETER}={retry + 1}")))


@twilio_webhook
def voice(request: HttpRequest) -> HttpResponse:
    """Voice URL: record the call, answer ``<Connect><Stream>`` with a fresh token (or hang up).

    A call whose stream is live gets no new token (see :func:`_live_stream_answer`).
    """
    call_sid = _call_sid(request)
    if not call_sid:
        return _missing_call_sid(request)
    overflow = _overflow_answer(request, call_sid)
    if overflow is not None:
        return overflow
    outcome = records.record_voice_webhook(call_sid, request.POST)
    _status_signal(outcome.change, outcome.call, outcome.created)
    if outcome.live_stream:
        return _live_stream_answer(request, call_sid, outcome.live_stream)
    if outcome.token is None:
        logger.info("Voice webhook for ended call %s: hanging up", sanitize(call_sid))
        return _twiml(hangup_twiml())
    _signal_on_commit(call_started, call=outcome.call)
    twiml = connect_stream_twiml(
        outcome.token,
        status_callback=stream_status_callback_url(),
        greeting=str(voicecall_settings.GREETING or ""),
    )
    return _twiml(twiml)


@twilio_webhook
def call_status(request: HttpRequest) -> HttpResponse:
    """Call status callback: apply the status in SequenceNumber order; always empty TwiML."""
    call_sid = _call_sid(request)
    if not call_sid:
        return _missing_call_sid(request)
    outcome = records.record_call_status(call_sid, request.POST)
    _status_signal(outcome.change, outcome.call, outcome.created)
    return _twiml(empty_twiml())


@twilio_webhook
def stream_status(request: HttpRequest) -> HttpResponse:
    """Stream status callback: record ``twilio.stream.started/stopped/error``; unknown calls are logged."""
    call_sid = _call_sid(request)
    if not call_sid:
        return _missing_call_sid(request)
    event = records.record_stream_status(call_sid, request.POST)
    if event is None:
        logger.warning(
            "Stream status %s for unknown call %s ignored",
            sanitize(request.POST.get("StreamEvent", ""), 40),
            sanitize(call_sid),
        )
    return _twiml(empty_twiml())


# --- Call control: capacity, answering-machine detection, recordings ---------------------


def _overflow_answer(request: HttpRequest, call_sid: str) -> HttpResponse | None:
    """``VOICECALL["OVERFLOW"]`` when no stream can be taken now (see voicecall.capacity), else None.

    A call whose own stream is still live is left to the normal answer: it
    needs no new capacity.
    """
    reason = capacity.full_reason()
    if reason is None or MediaStream.objects.filter(call__call_sid=call_sid, stopped_at__isnull=True).exists():
        return None
    outcome = control_records.record_overflow(call_sid, request.POST, reason)
    _status_signal(outcome.change, outcome.call, outcome.created)
    logger.warning("Voice webhook for call %s answered with OVERFLOW: %s", sanitize(call_sid), sanitize(reason, 200))
    return _twiml(configured_twiml(voicecall_settings.OVERFLOW or {}))


@twilio_webhook
def amd_status(request: HttpRequest) -> HttpResponse:
    """Async answering-machine detection callback: ``Call.answered_by``, an event and ``call_answered_by``."""
    call_sid = _call_sid(request)
    if not call_sid:
        return _missing_call_sid(request)
    outcome = control_records.record_amd(call_sid, request.POST)
    if outcome.answered_by:
        _signal_on_commit(
            call_answered_by, call=outcome.call, answered_by=outcome.answered_by, detection_ms=outcome.detection_ms
        )
    return _twiml(empty_twiml())


@twilio_webhook
def recording_status(request: HttpRequest) -> HttpResponse:
    """Recording status callback (and ``<Record>``'s action): the Recording row and ``recording_status_changed``.

    Answers empty TwiML, which ends a call that was recording a voicemail.
    """
    call_sid = _call_sid(request)
    if not call_sid:
        return _missing_call_sid(request)
    outcome = control_records.record_recording_status(call_sid, request.POST)
    if outcome.recording is not None and outcome.changed:
        _signal_on_commit(
            recording_status_changed, call=outcome.call, recording=outcome.recording, status=outcome.status
        )
    return _twiml(empty_twiml())
