"""Call control through Twilio's REST API: place, hang up, transfer, voicemail, record.

Every function talks to Twilio through the ``twilio`` library's ``Client``,
pointed at ``TWILIO_API_BASE_URL`` (Twilio's paths are appended to it), and
records what it did on the call (``control.*`` events, voicecall.control_records)::

    from voicecall.control import place_call, hang_up, transfer

    call = place_call("+14155551234", "+14155550000", machine_detection=True)
    transfer(call.call_sid, "sip:desk@pbx.example.com")
    hang_up(call.call_sid)

Async twins (``aplace_call``, ``ahang_up``, ...) use the library's aiohttp
client and never block the event loop, also not while pacing waits.

Twilio answers with the TwiML of our own voice webhook for a placed call and
sends its status callbacks (every documented event) to ours, so a placed call
is recorded and streamed exactly like an inbound one. A Twilio refusal comes
back as a :class:`CallControlError` subclass carrying Twilio's code and
message; an unreachable API as :class:`TwilioUnreachable`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.urls import reverse
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from . import control_records, pacing
from .conf import voicecall_settings
from .events import ControlEvent
from .fallback import E164, dial_twiml, goodbye_twiml, is_destination, voicemail_twiml
from .logsafe import sanitize
from .models import Call, Recording
from .twilio_auth import public_url_for

__all__ = [
    "CallControlError",
    "NotConfigured",
    "TwilioUnreachable",
    "AuthenticationFailed",
    "RateLimited",
    "InvalidNumber",
    "CallNotInProgress",
    "CallNotFound",
    "STATUS_CALLBACK_EVENTS",
    "RECORDING_STATUS_CALLBACK_EVENTS",
    "MACHINE_DETECTION_MODES",
    "twilio_client",
    "webhook_url",
    "place_call",
    "aplace_call",
    "hang_up",
    "ahang_up",
    "transfer",
    "atransfer",
    "send_to_voicemail",
    "asend_to_voicemail",
    "end_call",
    "aend_call",
    "start_recording",
    "astart_recording",
    "stop_recording",
    "astop_recording",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Every call progress event Twilio can post to the status callback.
STATUS_CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
#: Every recording event Twilio can post to the recording status callback.
RECORDING_STATUS_CALLBACK_EVENTS = "in-progress completed absent"
#: Twilio's ``MachineDetection`` modes: answer at once, or wait for the greeting's end (to leave a message).
MACHINE_DETECTION_MODES = ("Enable", "DetectMessageEnd")
#: The recording Twilio is making on a call, for stop_recording without a RecordingSid.
CURRENT_RECORDING = "Twilio.CURRENT"

_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")
_CLIENT = re.compile(r"^client:[A-Za-z0-9_.@-]{1,256}$")


# --- Errors ------------------------------------------------------------------------


class CallControlError(Exception):
    """Twilio refused a request, or it could not be made. ``code`` is Twilio's error code, when it sent one."""

    hint = "See the Twilio error code's page for what to change."

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None, more_info: str = ""):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.more_info = more_info

    def __str__(self) -> str:
        prefix = f"Twilio error {self.code}: " if self.code is not None else ""
        return f"{prefix}{self.message}"


class NotConfigured(CallControlError):
    hint = "Set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN in the Django settings."


class TwilioUnreachable(CallControlError):
    hint = "Check TWILIO_API_BASE_URL and this host's network access to it."


class AuthenticationFailed(CallControlError):
    hint = "Check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN: Twilio did not accept them."


class RateLimited(CallControlError):
    hint = "Too many requests: lower TWILIO_CALLS_PER_SECOND or try again shortly."


class InvalidNumber(CallControlError):
    hint = "Use an E.164 number such as +14155551234 (or a sip: URI where one is allowed)."


class CallNotInProgress(CallControlError):
    hint = "The call has ended or is not connected yet; check its status in the admin."


class CallNotFound(CallControlError):
    hint = "Check the CallSid: Twilio has no such call on this account."


#: Twilio error codes and the exception each becomes.
_ERRORS: dict[int, type[CallControlError]] = {
    20003: AuthenticationFailed,
    20404: CallNotFound,
    20429: RateLimited,
    21210: InvalidNumber,  # From is not a Twilio number or verified caller ID
    21211: InvalidNumber,
    21212: InvalidNumber,
    21213: InvalidNumber,
    21214: InvalidNumber,
    21217: InvalidNumber,
    21220: CallNotInProgress,
}


_LIBRARY_PREFIX = re.compile(r"^Unable to \w+ record: ")


def _from_twilio(exc: TwilioRestException | TwilioServiceException) -> CallControlError:
    """The CallControlError for one of Twilio's error answers (legacy JSON or RFC 9457)."""
    code = exc.code if isinstance(exc.code, int) else None
    status = exc.status
    if isinstance(exc, TwilioServiceException):
        message = exc.detail or exc.title
    else:
        message = _LIBRARY_PREFIX.sub("", exc.msg or "")
    kind = _ERRORS.get(code or 0)
    if kind is None and status == 401:
        kind = AuthenticationFailed
    if kind is None and status == 429:
        kind = RateLimited
    more_info = f"https://www.twilio.com/docs/errors/{code}" if code else ""
    return (kind or CallControlError)(
        sanitize(message or f"HTTP {status}", 300), code=code, status=status, more_info=more_info
    )


# --- The client ---------------------------------------------------------------------


def _account() -> tuple[str, str]:
    account = str(voicecall_settings.TWILIO_ACCOUNT_SID or "")
    token = str(voicecall_settings.TWILIO_AUTH_TOKEN or "")
    if not account or not token:
        raise NotConfigured("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must both be set to use Twilio's REST API")
    return account, token


def twilio_client(*, asynchronous: bool = False) -> Client:
    """A ``twilio.rest.Client`` for the configured account, talking to ``TWILIO_API_BASE_URL``.

    The async one uses the library's aiohttp client, one session per request
    (so it belongs to no event loop in particular).
    """
    account, token = _account()
    timeout = float(voicecall_settings.API_TIMEOUT_SECONDS)
    if asynchronous:
        from twilio.http.async_http_client import AsyncTwilioHttpClient

        http_client = AsyncTwilioHttpClient(pool_connections=False, timeout=timeout)
    else:
        http_client = TwilioHttpClient(timeout=timeout)
    # The settings configure the client, not the process environment: a
    # TWILIO_EDGE or TWILIO_REGION there would rewrite the configured origin's host.
    client = Client(
        account, token, http_client=http_client, environment={"TWILIO_ACCOUNT_SID": account, "TWILIO_AUTH_TOKEN": token}
    )
    # The Api domain (/2010-04-01/...) is where calls and recordings live.
    client.api.base_url = str(voicecall_settings.TWILIO_API_BASE_URL).rstrip("/")
    return client


def _unreachable(exc: Exception) -> TwilioUnreachable:
    base = sanitize(voicecall_settings.TWILIO_API_BASE_URL, 100)
    return TwilioUnreachable(f"could not reach Twilio's REST API at {base}: {sanitize(exc, 200)}")


def _refused(action: str, error: CallControlError) -> CallControlError:
    logger.warning("Twilio refused %s: %s", action, error)
    return error


def _rest(action: str, operation: Callable[[], T]) -> T:
    """Run ``operation``; Twilio's refusals and network errors become CallControlErrors."""
    try:
        return operation()
    except (TwilioRestException, TwilioServiceException) as exc:
        raise _refused(action, _from_twilio(exc)) from exc
    except OSError as exc:  # requests' errors (connection, timeout, bad URL) are OSErrors
        raise _refused(action, _unreachable(exc)) from exc
    except TwilioException as exc:  # e.g. an answer that is not Twilio's JSON
        raise _refused(action, CallControlError(sanitize(exc, 300))) from exc


async def _arest(action: str, operation: Callable[[], Awaitable[T]]) -> T:
    """:func:`_rest` for the async client."""
    import asyncio

    import aiohttp

    try:
        return await operation()
    except (TwilioRestException, TwilioServiceException) as exc:
        raise _refused(action, _from_twilio(exc)) from exc
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise _refused(action, _unreachable(exc)) from exc
    except TwilioException as exc:
        raise _refused(action, CallControlError(sanitize(exc, 300))) from exc


# --- Arguments ----------------------------------------------------------------------


def webhook_url(name: str) -> str:
    """The public URL of one of voicecall's webhooks (``"voice"``, ``"status"``, ...), with its trailing slash."""
    return public_url_for(reverse(f"voicecall:{name}").rstrip("/") + "/")


def _call_sid(value: str) -> str:
    text = str(value or "").strip()
    if not _SID.match(text) or not text.startswith("CA"):
        raise CallNotFound(f"not a CallSid: {sanitize(text, 40)!r}")
    return text


def _number(value: str, what: str, *, sip: bool) -> str:
    text = str(value or "").strip()
    if E164.match(text) or _CLIENT.match(text) or (sip and is_destination(text)):
        return text
    raise InvalidNumber(f"{what} is not an E.164 number{' or sip: URI' if sip else ''}: {sanitize(text, 40)!r}")


def _machine_detection(value: bool | str | None) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return "Enable"
    if value in MACHINE_DETECTION_MODES:
        return str(value)
    raise ValueError(f"machine_detection must be True, False or one of {MACHINE_DETECTION_MODES}, got {value!r}")


def _agent(value: str | Mapping[str, Any] | None) -> str | dict | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"agent must be a dotted path or a config dict, got {type(value).__name__}")


def _time_limit() -> int | None:
    limit = voicecall_settings.MAX_CALL_SECONDS
    if not limit:
        return None
    return int(limit) + int(voicecall_settings.MAX_CALL_GRACE_SECONDS or 0)


def _create_kwargs(to: str, from_: str, machine_detection: str | None, timeout: int | None) -> dict[str, Any]:
    """The Calls create parameters: our voice webhook's TwiML, our callbacks, AMD, limits."""
    kwargs: dict[str, Any] = {
        "to": to,
        "from_": from_,
        "url": webhook_url("voice"),
        "method": "POST",
        "status_callback": webhook_url("status"),
        "status_callback_method": "POST",
        "status_callback_event": list(STATUS_CALLBACK_EVENTS),
    }
    ring = timeout if timeout is not None else voicecall_settings.RING_TIMEOUT_SECONDS
    if ring is not None:
        kwargs["timeout"] = int(ring)
    time_limit = _time_limit()
    if time_limit:
        kwargs["time_limit"] = time_limit
    if machine_detection:
        kwargs.update(
            machine_detection=machine_detection,
            async_amd="true",
            async_amd_status_callback=webhook_url("amd-status"),
            async_amd_status_callback_method="POST",
        )
    return kwargs


def _placement(to, from_, agent, machine_detection, timeout, metadata) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check place_call's arguments; return (Twilio's create kwargs, what the Call record keeps)."""
    to = _number(to, "To", sip=True)
    from_ = _number(from_, "From", sip=False)
    detection = _machine_detection(machine_detection)
    if timeout is not None and not 1 <= int(timeout) <= 600:
        raise ValueError(f"timeout must be 1 to 600 seconds, got {timeout!r}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    kwargs = _create_kwargs(to, from_, detection, timeout)
    record = {"agent": _agent(agent), "metadata": dict(metadata or {}), "machine_detection": detection or ""}
    return kwargs, record


def _pacing_rate() -> float:
    return float(voicecall_settings.TWILIO_CALLS_PER_SECOND)


# --- Place a call --------------------------------------------------------------------


def place_call(
    to: str,
    from_: str,
    *,
    agent: str | Mapping[str, Any] | None = None,
    machine_detection: bool | str | None = None,
    timeout: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call:
    """Start an outbound call from ``from_`` (a Twilio number) to ``to``; return its Call record.

    ``agent`` (a dotted path or config dict) and ``metadata`` are kept on the
    call. ``machine_detection`` (True, "Enable" or "DetectMessageEnd") asks
    for Twilio's async answering-machine detection: its result arrives as
    ``Call.answered_by`` and the ``call_answered_by`` signal. ``timeout``: ring
    seconds (1-600). Waits for a pacing slot first (TWILIO_CALLS_PER_SECOND).
    """
    kwargs, record = _placement(to, from_, agent, machine_detection, timeout, metadata)
    client = twilio_client()
    calls = client.calls  # built (and imported) now, not between the slot and the request
    pacing.wait_for_slot(client.account_sid, _pacing_rate())
    instance = _rest(f"a call to {sanitize(kwargs['to'], 40)}", lambda: calls.create(**kwargs))
    return control_records.record_placed(instance, kwargs, **record)


async def aplace_call(
    to: str,
    from_: str,
    *,
    agent: str | Mapping[str, Any] | None = None,
    machine_detection: bool | str | None = None,
    timeout: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call:
    """:func:`place_call` for async code."""
    kwargs, record = _placement(to, from_, agent, machine_detection, timeout, metadata)
    client = twilio_client(asynchronous=True)
    calls = client.calls
    await pacing.await_slot(client.account_sid, _pacing_rate())
    instance = await _arest(f"a call to {sanitize(kwargs['to'], 40)}", lambda: calls.create_async(**kwargs))
    return await sync_to_async(control_records.record_placed)(instance, kwargs, **record)


# --- Change a live call -----------------------------------------------------------------


def _update(call_sid: str, action: str, event: ControlEvent, note: dict[str, Any], **update: Any) -> str:
    instance = _rest(f"{action} of {call_sid}", lambda: twilio_client().calls(call_sid).update(**update))
    control_records.note(call_sid, event, {**note, "status": instance.status or ""})
    return instance.status or ""


async def _aupdate(call_sid: str, action: str, event: ControlEvent, note: dict[str, Any], **update: Any) -> str:
    instance = await _arest(
        f"{action} of {call_sid}", lambda: twilio_client(asynchronous=True).calls(call_sid).update_async(**update)
    )
    await sync_to_async(control_records.note)(call_sid, event, {**note, "status": instance.status or ""})
    return instance.status or ""


def hang_up(call_sid: str) -> str:
    """End the call (a ringing one is canceled); return the status Twilio reports."""
    return _update(_call_sid(call_sid), "hang-up", ControlEvent.HUNG_UP, {}, status="completed")


async def ahang_up(call_sid: str) -> str:
    return await _aupdate(_call_sid(call_sid), "hang-up", ControlEvent.HUNG_UP, {}, status="completed")


def _transfer_twiml(to: str, caller_id: str | None, say: str) -> tuple[str, dict[str, Any]]:
    destination = _number(to, "the transfer destination", sip=True)
    return dial_twiml(destination, caller_id=caller_id, say=say), {"to": destination}


def transfer(call_sid: str, to: str, *, caller_id: str | None = None, say: str = "") -> str:
    """Replace the call's TwiML (and so end its stream) with ``<Dial>`` to a number or ``sip:`` URI."""
    twiml, note = _transfer_twiml(to, caller_id, say)
    return _update(_call_sid(call_sid), "transfer", ControlEvent.TRANSFERRED, note, twiml=twiml)


async def atransfer(call_sid: str, to: str, *, caller_id: str | None = None, say: str = "") -> str:
    twiml, note = _transfer_twiml(to, caller_id, say)
    return await _aupdate(_call_sid(call_sid), "transfer", ControlEvent.TRANSFERRED, note, twiml=twiml)


def _voicemail_twiml() -> str:
    return voicemail_twiml(voicecall_settings.VOICEMAIL or {}, recording_status_callback=webhook_url("recording-status"))


def send_to_voicemail(call_sid: str) -> str:
    """Replace the call's TwiML with ``VOICECALL["VOICEMAIL"]`` (a message and ``<Record>``, or its own TWIML)."""
    return _update(_call_sid(call_sid), "voicemail", ControlEvent.VOICEMAIL, {}, twiml=_voicemail_twiml())


async def asend_to_voicemail(call_sid: str) -> str:
    return await _aupdate(_call_sid(call_sid), "voicemail", ControlEvent.VOICEMAIL, {}, twiml=_voicemail_twiml())


def _end_update(goodbye: str) -> dict[str, Any]:
    return {"twiml": goodbye_twiml(goodbye)} if goodbye else {"status": "completed"}


def end_call(call_sid: str, *, goodbye: str = "", reason: str = "") -> str:
    """Hang up, after Twilio says ``goodbye`` (if given) in place of the stream."""
    note = {"reason": reason, "goodbye": bool(goodbye)}
    return _update(_call_sid(call_sid), "end", ControlEvent.HUNG_UP, note, **_end_update(goodbye))


async def aend_call(call_sid: str, *, goodbye: str = "", reason: str = "") -> str:
    note = {"reason": reason, "goodbye": bool(goodbye)}
    return await _aupdate(_call_sid(call_sid), "end", ControlEvent.HUNG_UP, note, **_end_update(goodbye))


# --- Recordings ------------------------------------------------------------------------


def _recording_kwargs(channels: str) -> dict[str, Any]:
    if channels not in ("mono", "dual"):
        raise ValueError(f"channels must be 'mono' or 'dual', got {channels!r}")
    return {
        "recording_status_callback": webhook_url("recording-status"),
        "recording_status_callback_method": "POST",
        "recording_status_callback_event": RECORDING_STATUS_CALLBACK_EVENTS,
        "recording_channels": channels,
    }


def start_recording(call_sid: str, *, channels: str = "dual") -> Recording:
    """Record the live call (Twilio's Recordings resource: ``<Record>`` cannot run inside ``<Connect>``).

    Its status callbacks update the returned :class:`~voicecall.models.Recording`
    (status, URL, duration) and send ``recording_status_changed``.
    """
    call_sid = _call_sid(call_sid)
    kwargs = _recording_kwargs(channels)
    instance = _rest(f"recording of {call_sid}", lambda: twilio_client().calls(call_sid).recordings.create(**kwargs))
    return control_records.record_recording_started(call_sid, instance)


async def astart_recording(call_sid: str, *, channels: str = "dual") -> Recording:
    call_sid = _call_sid(call_sid)
    kwargs = _recording_kwargs(channels)
    instance = await _arest(
        f"recording of {call_sid}",
        lambda: twilio_client(asynchronous=True).calls(call_sid).recordings.create_async(**kwargs),
    )
    return await sync_to_async(control_records.record_recording_started)(call_sid, instance)


def stop_recording(call_sid: str, recording_sid: str = CURRENT_RECORDING) -> str:
    """Stop a recording of the call (by default the one in progress); return its status."""
    call_sid = _call_sid(call_sid)
    instance = _rest(
        f"stop of a recording of {call_sid}",
        lambda: twilio_client().calls(call_sid).recordings(recording_sid).update(status="stopped"),
    )
    return control_records.record_recording_stopped(call_sid, instance)


async def astop_recording(call_sid: str, recording_sid: str = CURRENT_RECORDING) -> str:
    call_sid = _call_sid(call_sid)
    instance = await _arest(
        f"stop of a recording of {call_sid}",
        lambda: twilio_client(asynchronous=True).calls(call_sid).recordings(recording_sid).update_async(status="stopped"),
    )
    return await sync_to_async(control_records.record_recording_stopped)(call_sid, instance)
