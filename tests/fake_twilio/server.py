"""The fake Twilio: REST API (aiohttp, on its own thread and loop) plus Twilio's side of its calls.

It runs on a thread of its own so that sync code under test (``place_call``
blocks on its HTTP request) and async tests can both use it. What it checks
follows Twilio's Call and Recording resources: the account SID in the path
must be the basic-auth user and the password the auth token (else 401,
code 20003); each form field must be one the resource documents, with a
documented value; errors are Twilio's JSON ``{code, message, more_info,
status}``. The numbers follow Twilio's test-credential conventions:
``+15005550001`` is an invalid "To" (21211).

Given ``webhook_origin`` (a running server), it then plays each call it
created the way Twilio does: status callbacks for the requested events,
the voice webhook (its TwiML is executed: ``Say``, ``Connect/Stream``,
``Dial``, ``Record``, ``Redirect``, ``Pause``, ``Hangup``), a real media
stream for ``<Connect><Stream>`` through ``mediastream.simulator``, the
stream status callbacks, the async AMD callback and recording callbacks.
Every callback is signed with the auth token for the public URL it was
given and posted to the same path on ``webhook_origin``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, web
from twilio.request_validator import RequestValidator

from mediastream.simulator import TwilioStream, stream_urls

__all__ = ["FakeTwilio", "FakeCall", "ApiRequest", "Callback", "TwilioApiError", "INVALID_TO"]

T = TypeVar("T")

API = "/2010-04-01"
#: Twilio's test number for an invalid "To".
INVALID_TO = "+15005550001"
#: Twilio's code for a parameter it does not know or a value outside what it documents.
INVALID_PARAMETER = 20001

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SIP = re.compile(r"^sips?:[^\s@]+@[^\s]+$", re.IGNORECASE)
_CLIENT = re.compile(r"^client:[A-Za-z0-9_.@-]+$")

CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
RECORDING_EVENTS = frozenset({"in-progress", "completed", "absent"})
TERMINAL = frozenset({"completed", "canceled", "busy", "failed", "no-answer"})

CREATE_FIELDS = frozenset({
    "To", "From", "Url", "Method", "Twiml", "ApplicationSid", "FallbackUrl", "FallbackMethod",
    "StatusCallback", "StatusCallbackEvent", "StatusCallbackMethod", "SendDigits", "Timeout", "TimeLimit",
    "Record", "RecordingChannels", "RecordingStatusCallback", "RecordingStatusCallbackMethod",
    "RecordingStatusCallbackEvent", "Trim", "CallerId", "MachineDetection", "MachineDetectionTimeout",
    "MachineDetectionSpeechThreshold", "MachineDetectionSpeechEndThreshold", "MachineDetectionSilenceTimeout",
    "AsyncAmd", "AsyncAmdStatusCallback", "AsyncAmdStatusCallbackMethod", "CallReason", "RecordingTrack",
})
UPDATE_FIELDS = frozenset({
    "Url", "Method", "Status", "FallbackUrl", "FallbackMethod", "StatusCallback", "StatusCallbackMethod", "Twiml", "TimeLimit",
})
RECORDING_CREATE_FIELDS = frozenset({
    "RecordingStatusCallbackEvent", "RecordingStatusCallback", "RecordingStatusCallbackMethod", "Trim",
    "RecordingChannels", "RecordingTrack", "RecordingConfigurationId",
})
RECORDING_UPDATE_FIELDS = frozenset({"Status", "PauseBehavior"})


class TwilioApiError(Exception):
    """A refusal, answered as Twilio's error JSON."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        body = {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
        return web.json_response(body, status=self.status)


def _invalid(name: str, value: Any) -> TwilioApiError:
    return TwilioApiError(400, INVALID_PARAMETER, f"Invalid {name}: {value!r}")


@dataclass(frozen=True)
class ApiRequest:
    """One REST request as the fake saw it."""

    method: str
    path: str
    form: dict[str, list[str]]
    at: float
    status: int = 0

    def value(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Callback:
    """One webhook the fake posted: ``kind`` is status, voice, amd, recording, stream-status, action or redirect."""

    kind: str
    url: str
    params: dict[str, str]
    status: int
    body: str
    at: float


@dataclass
class FakeCall:
    sid: str
    account_sid: str
    to: str
    from_: str
    form: dict[str, list[str]]
    status: str = "queued"
    sequence: int = 0
    created: float = field(default_factory=time.time)
    answered: float | None = None
    ended: float | None = None
    stream: TwilioStream | None = None
    stream_callback: str = ""
    said: list[str] = field(default_factory=list)
    dialed: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    recordings: dict[str, dict] = field(default_factory=dict)
    time_limit: int | None = None
    stream_errors: list[str] = field(default_factory=list)
    task: asyncio.Task | None = None

    def value(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    @property
    def events(self) -> set[str]:
        return {event for value in self.form.get("StatusCallbackEvent", []) for event in value.split()}


def _now_rfc2822() -> str:
    return format_datetime(datetime.now(timezone.utc), usegmt=True)


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _absolute_url(value: str | None) -> bool:
    parts = urlsplit(value or "")
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _int_in(form: dict, name: str, low: int, high: int) -> int | None:
    value = form.get(name, [None])[0]
    if value is None:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise _invalid(name, value)
    return int(value)


def _method(form: dict, name: str) -> None:
    value = form.get(name, [None])[0]
    if value is not None and value not in ("GET", "POST"):
        raise _invalid(name, value)


def _known_fields(form: dict, allowed: frozenset[str]) -> None:
    unknown = sorted(set(form) - allowed)
    if unknown:
        raise TwilioApiError(400, INVALID_PARAMETER, f"Unknown parameters: {', '.join(unknown)}")


class FakeTwilio:
    """Twilio's REST API for one account, on 127.0.0.1, and Twilio's side of the calls it creates."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        public_url: str = "https://voice.example.com",
        webhook_origin: str | None = None,
        answered_by: str = "human",
        open_streams: bool = True,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.public_url = public_url.rstrip("/")
        self.webhook_origin = webhook_origin
        self.answered_by = answered_by
        self.open_streams = open_streams
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[ApiRequest] = []
        self.callbacks: list[Callback] = []
        self.errors: list[str] = []
        self.port: int | None = None
        self._failures: list[TwilioApiError] = []
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._deliveries: set[asyncio.Task] = set()

    # --- running --------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeTwilio:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-twilio", daemon=True)
        self._thread.start()
        self.run(self._serve())
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the fake's loop from any other thread; return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def fail_next(self, status: int, code: int, message: str) -> None:
        """Answer the next REST request (after the auth check) with this Twilio error."""
        self._failures.append(TwilioApiError(status, code, message))

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Block until ``predicate()`` (over the fake's state) is truthy; re-checked on every change."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"fake Twilio: condition not met within {timeout}s (errors: {self.errors})")
                self._changed.wait(remaining)

    def callbacks_of(self, kind: str, call_sid: str | None = None) -> list[Callback]:
        return [c for c in self.callbacks if c.kind == kind and (call_sid is None or c.params.get("CallSid") == call_sid)]

    def requests_to(self, suffix: str, method: str = "POST") -> list[ApiRequest]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(repr(task.exception()))
            self._notify()

    async def _serve(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=15))
        app = web.Application(middlewares=[self._gate])
        calls = f"{API}/Accounts/{{account}}/Calls"
        app.add_routes([
            web.post(f"{calls}.json", self._create_call),
            web.get(f"{calls}/{{sid}}.json", self._fetch_call),
            web.post(f"{calls}/{{sid}}.json", self._update_call),
            web.post(f"{calls}/{{sid}}/Recordings.json", self._create_recording),
            web.post(f"{calls}/{{sid}}/Recordings/{{recording}}.json", self._update_recording),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._deliveries, return_exceptions=True)
        for call in self.calls.values():
            if call.stream is not None:
                await call.stream.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- the gate: auth, recorded requests, injected failures, Twilio-shaped errors ---------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    @web.middleware
    async def _gate(self, request: web.Request, handler) -> web.StreamResponse:
        form: dict[str, list[str]] = {}
        if request.method == "POST":
            posted = await request.post()
            for name in posted.keys():
                form.setdefault(name, [str(value) for value in posted.getall(name)])
        try:
            if not self._authorized(request) or request.match_info.get("account", self.account_sid) != self.account_sid:
                raise TwilioApiError(401, 20003, "Authenticate")
            if self._failures:
                raise self._failures.pop(0)
            response = await handler(request, form)
        except TwilioApiError as exc:
            response = exc.response()
        except web.HTTPNotFound:
            response = TwilioApiError(404, 20404, f"The requested resource {request.path} was not found").response()
        self.requests.append(ApiRequest(request.method, request.path, form, time.time(), response.status))
        self._notify()
        return response

    # --- Calls ------------------------------------------------------------------------------------

    def _call_json(self, call: FakeCall) -> dict:
        uri = f"{API}/Accounts/{call.account_sid}/Calls/{call.sid}.json"
        duration = None if call.ended is None or call.answered is None else str(int(call.ended - call.answered))
        return {
            "sid": call.sid, "account_sid": call.account_sid, "api_version": "2010-04-01",
            "date_created": format_datetime(datetime.fromtimestamp(call.created, timezone.utc), usegmt=True),
            "date_updated": _now_rfc2822(), "parent_call_sid": None, "to": call.to, "to_formatted": call.to,
            "from": call.from_, "from_formatted": call.from_, "phone_number_sid": None, "status": call.status,
            "start_time": None, "end_time": None, "duration": duration, "price": None, "price_unit": "USD",
            "direction": "outbound-api", "answered_by": None, "forwarded_from": None, "group_sid": None,
            "caller_name": None, "queue_time": "0", "trunk_sid": None, "uri": uri,
            "subresource_uris": {"recordings": uri.replace(".json", "/Recordings.json")},
        }

    def _call(self, request: web.Request) -> FakeCall:
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            raise TwilioApiError(404, 20404, f"The requested resource {request.path} was not found")
        return call

    async def _create_call(self, request: web.Request, form: dict) -> web.Response:
        _known_fields(form, CREATE_FIELDS)
        to, from_ = form.get("To", [""])[0], form.get("From", [""])[0]
        if not to:
            raise TwilioApiError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise TwilioApiError(400, 21213, "No 'From' number is specified")
        if to == INVALID_TO or not (_E164.match(to) or _SIP.match(to) or _CLIENT.match(to)):
            raise TwilioApiError(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not (_E164.match(from_) or _CLIENT.match(from_)):
            raise TwilioApiError(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        sources = [name for name in ("Url", "Twiml", "ApplicationSid") if name in form]
        if len(sources) != 1:
            raise TwilioApiError(400, 21205, "Exactly one of Url, Twiml or ApplicationSid is required")
        if "Url" in form and not _absolute_url(form["Url"][0]):
            raise TwilioApiError(400, 21205, f"Url is not a valid URL: {form['Url'][0]}")
        for name in ("Method", "StatusCallbackMethod", "AsyncAmdStatusCallbackMethod", "FallbackMethod"):
            _method(form, name)
        for name in ("StatusCallback", "AsyncAmdStatusCallback", "FallbackUrl"):
            if name in form and not _absolute_url(form[name][0]):
                raise _invalid(name, form[name][0])
        events = {event for value in form.get("StatusCallbackEvent", []) for event in value.split()}
        if not events <= CALL_EVENTS:
            raise _invalid("StatusCallbackEvent", sorted(events - CALL_EVENTS))
        _int_in(form, "Timeout", 1, 600)
        time_limit = _int_in(form, "TimeLimit", 1, 86400)
        detection = form.get("MachineDetection", [None])[0]
        if detection is not None and detection not in ("Enable", "DetectMessageEnd"):
            raise _invalid("MachineDetection", detection)
        async_amd = form.get("AsyncAmd", [None])[0]
        if async_amd is not None and async_amd not in ("true", "false"):
            raise _invalid("AsyncAmd", async_amd)
        if async_amd == "true" and "AsyncAmdStatusCallback" not in form:
            raise TwilioApiError(400, 21626, "AsyncAmdStatusCallback is required when AsyncAmd is true")
        call = FakeCall(
            sid=_new_sid("CA"), account_sid=self.account_sid, to=to, from_=from_, form=form, time_limit=time_limit
        )
        self.calls[call.sid] = call
        if self.webhook_origin:
            call.task = self._spawn(self._play(call))
        return web.json_response(self._call_json(call), status=201)

    async def _fetch_call(self, request: web.Request, form: dict) -> web.Response:
        return web.json_response(self._call_json(self._call(request)))

    async def _update_call(self, request: web.Request, form: dict) -> web.Response:
        _known_fields(form, UPDATE_FIELDS)
        call = self._call(request)
        for name in ("Method", "StatusCallbackMethod", "FallbackMethod"):
            _method(form, name)
        if "TimeLimit" in form:
            call.time_limit = _int_in(form, "TimeLimit", 1, 86400)
        status = form.get("Status", [None])[0]
        twiml = form.get("Twiml", [None])[0]
        url = form.get("Url", [None])[0]
        if status is not None:
            if status not in ("completed", "canceled"):
                raise _invalid("Status", status)
            if call.status in TERMINAL or (status == "canceled" and call.status == "in-progress"):
                return web.json_response(self._call_json(call))
            ending = "completed" if call.status == "in-progress" else "canceled"
            self._spawn(self._hang_up(call, ending))
            return web.json_response({**self._call_json(call), "status": ending})
        if twiml is not None or url is not None:
            if twiml is not None and url is not None:
                raise TwilioApiError(400, 21205, "Twiml and Url are mutually exclusive")
            if call.status != "in-progress":
                raise TwilioApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
            if twiml is not None:
                try:
                    ET.fromstring(twiml)
                except ET.ParseError as exc:
                    raise TwilioApiError(400, 12100, f"Document parse failure: {exc}") from None
            elif not _absolute_url(url):
                raise TwilioApiError(400, 21205, f"Url is not a valid URL: {url}")
            self._spawn(self._replace(call, twiml if twiml is not None else ("url", url)))
        return web.json_response(self._call_json(call))

    # --- Recordings ----------------------------------------------------------------------------------

    def _recording_json(self, call: FakeCall, recording: dict) -> dict:
        return {
            "account_sid": call.account_sid, "api_version": "2010-04-01", "call_sid": call.sid,
            "conference_sid": None, "date_created": recording["created"], "date_updated": _now_rfc2822(),
            "start_time": recording["created"], "duration": recording.get("duration", "-1"),
            "sid": recording["sid"], "price": None, "price_unit": "USD", "status": recording["status"],
            "channels": recording["channels"], "source": recording["source"], "error_code": 0, "track": "both",
            "uri": f"{API}/Accounts/{call.account_sid}/Calls/{call.sid}/Recordings/{recording['sid']}.json",
            "encryption_details": None,
        }

    async def _create_recording(self, request: web.Request, form: dict) -> web.Response:
        _known_fields(form, RECORDING_CREATE_FIELDS)
        call = self._call(request)
        if call.status != "in-progress":
            raise TwilioApiError(400, 21220, "Requested resource is not eligible for recording")
        events = {event for value in form.get("RecordingStatusCallbackEvent", ["completed"]) for event in value.split()}
        if not events <= RECORDING_EVENTS:
            raise _invalid("RecordingStatusCallbackEvent", sorted(events - RECORDING_EVENTS))
        channels = form.get("RecordingChannels", ["mono"])[0]
        if channels not in ("mono", "dual"):
            raise _invalid("RecordingChannels", channels)
        callback = form.get("RecordingStatusCallback", [""])[0]
        if callback and not _absolute_url(callback):
            raise _invalid("RecordingStatusCallback", callback)
        _method(form, "RecordingStatusCallbackMethod")
        recording = {
            "sid": _new_sid("RE"), "status": "in-progress", "channels": 2 if channels == "dual" else 1,
            "source": "StartCallRecordingAPI", "created": _now_rfc2822(), "started": time.time(),
            "callback": callback, "events": events,
        }
        call.recordings[recording["sid"]] = recording
        if callback and "in-progress" in events:
            self._spawn(self._recording_callback(call, recording))
        return web.json_response(self._recording_json(call, recording), status=201)

    async def _update_recording(self, request: web.Request, form: dict) -> web.Response:
        _known_fields(form, RECORDING_UPDATE_FIELDS)
        call = self._call(request)
        sid = request.match_info["recording"]
        if sid == "Twilio.CURRENT":
            live = [r for r in call.recordings.values() if r["status"] in ("in-progress", "paused")]
            recording = live[-1] if live else None
        else:
            recording = call.recordings.get(sid)
        if recording is None:
            raise TwilioApiError(404, 20404, f"The requested resource {request.path} was not found")
        status = form.get("Status", [None])[0]
        if status not in ("stopped", "paused", "in-progress"):
            raise _invalid("Status", status)
        if recording["status"] in ("in-progress", "paused"):
            recording["status"] = status
            if status == "stopped":
                self._finish_recording(call, recording)
        return web.json_response(self._recording_json(call, recording))

    def _finish_recording(self, call: FakeCall, recording: dict) -> None:
        recording["status"] = "stopped" if recording["status"] != "stopped" else recording["status"]
        recording["duration"] = str(max(1, int(time.time() - recording["started"])))
        if recording["callback"] and "completed" in recording["events"]:
            self._spawn(self._recording_callback(call, recording, "completed"))

    async def _recording_callback(self, call: FakeCall, recording: dict, status: str | None = None) -> None:
        params = {
            "AccountSid": call.account_sid, "CallSid": call.sid, "RecordingSid": recording["sid"],
            "RecordingUrl": f"https://api.twilio.com{API}/Accounts/{call.account_sid}/Recordings/{recording['sid']}",
            "RecordingStatus": status or recording["status"], "RecordingChannels": str(recording["channels"]),
            "RecordingSource": recording["source"], "RecordingStartTime": recording["created"],
            "RecordingDuration": recording.get("duration", "0") if status == "completed" else "0",
        }
        await self._post("recording", recording["callback"], params)

    # --- Twilio's side of a call -------------------------------------------------------------------------

    def _params(self, call: FakeCall) -> dict[str, str]:
        return {
            "CallSid": call.sid, "AccountSid": call.account_sid, "From": call.from_, "To": call.to,
            "CallStatus": call.status, "Direction": "outbound-api", "ApiVersion": "2010-04-01",
        }

    async def _post(self, kind: str, url: str, params: dict[str, str]) -> tuple[int, str]:
        """Post a signed webhook; once sent it completes even if what sent it is cancelled (a hang-up)."""
        delivery = asyncio.get_running_loop().create_task(self._deliver(kind, url, params))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        return await asyncio.shield(delivery)

    async def _deliver(self, kind: str, url: str, params: dict[str, str]) -> tuple[int, str]:
        """Post a signed webhook as Twilio does; the public URL's path goes to webhook_origin."""
        if self.webhook_origin is None:  # not playing calls: note what would have been posted
            self.callbacks.append(Callback(kind, url, dict(params), 0, "", time.time()))
            self._notify()
            return 0, ""
        if not url.startswith(self.public_url + "/"):
            self.errors.append(f"{kind} callback to a URL outside {self.public_url}: {url}")
            self._notify()
            return 0, ""
        target = self.webhook_origin.rstrip("/") + url[len(self.public_url):]
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        async with self._session.post(target, data=params, headers={"X-Twilio-Signature": signature}) as response:
            body = await response.text()
            status = response.status
        self.callbacks.append(Callback(kind, url, dict(params), status, body, time.time()))
        self._notify()
        return status, body

    async def _status(self, call: FakeCall, event: str, **extra: str) -> None:
        """The status callback for ``event``, if the call asked for it (``completed`` always is)."""
        url = call.value("StatusCallback")
        if not url or (event not in call.events and event != "completed"):
            return
        params = {
            **self._params(call), "CallbackSource": "call-progress-events", "Timestamp": _now_rfc2822(),
            "SequenceNumber": str(call.sequence), **extra,
        }
        call.sequence += 1
        await self._post("status", url, params)

    async def _play(self, call: FakeCall) -> None:
        call.status = "initiated"
        await self._status(call, "initiated")
        call.status = "ringing"
        await self._status(call, "ringing")
        call.status = "in-progress"
        call.answered = time.time()
        self._notify()
        if call.value("MachineDetection") and call.value("AsyncAmd") == "true":
            self._spawn(self._amd(call))
        inline = call.value("Twiml")
        if inline is not None:
            document = inline
        else:
            _status, document = await self._post("voice", call.value("Url"), self._params(call))
        await self._status(call, "answered")
        await self._execute(call, document)

    async def _amd(self, call: FakeCall) -> None:
        params = {
            "CallSid": call.sid, "AccountSid": call.account_sid, "AnsweredBy": self.answered_by,
            "MachineDetectionDuration": "2315",
        }
        await self._post("amd", call.value("AsyncAmdStatusCallback"), params)

    async def _hang_up(self, call: FakeCall, status: str) -> None:
        await self._replace(call, None)
        await self._end(call, status)

    async def _replace(self, call: FakeCall, document: str | tuple[str, str] | None) -> None:
        """Stop what the call runs (its stream ends) and, given a document, run that instead."""
        task, call.task = call.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._deliveries, return_exceptions=True)  # what was sent arrives first
        await self._stop_stream(call)
        if document is None:
            return
        if isinstance(document, tuple):
            call.task = self._spawn(self._fetch_and_execute(call, document[1], "redirect"))
        else:
            call.task = self._spawn(self._execute(call, document))

    async def _fetch_and_execute(self, call: FakeCall, url: str, kind: str, extra: dict | None = None) -> None:
        _status, document = await self._post(kind, url, {**self._params(call), **(extra or {})})
        await self._execute(call, document)

    async def _execute(self, call: FakeCall, document: str) -> None:
        """Run a TwiML document; at its end the call hangs up, as on Twilio."""
        call.documents.append(document)
        self._notify()
        try:
            root = ET.fromstring(document)
        except ET.ParseError:
            self.errors.append(f"unparseable TwiML for {call.sid}: {document[:200]}")
            root = ET.Element("Response")
        for verb in root:
            if call.status in TERMINAL:
                return
            if verb.tag == "Say":
                call.said.append(verb.text or "")
            elif verb.tag == "Pause":
                await asyncio.sleep(min(float(verb.get("length", "1")), 2.0))
            elif verb.tag == "Connect":
                stream = verb.find("Stream")
                if stream is not None and self.open_streams:
                    await self._run_stream(call, stream)
            elif verb.tag == "Dial":
                call.dialed += [(child.text or "").strip() for child in verb if child.tag in ("Number", "Sip", "Client")]
                self._notify()
                await asyncio.Event().wait()  # bridged until the call is hung up or redirected
            elif verb.tag == "Record":
                await self._record_verb(call, verb)
                return
            elif verb.tag == "Redirect":
                await self._fetch_and_execute(call, (verb.text or "").strip(), "redirect")
                return
            elif verb.tag == "Hangup":
                break
        await self._end(call, "completed")

    async def _run_stream(self, call: FakeCall, element: ET.Element) -> None:
        """Open the media stream the TwiML asks for and hold it until the server or a hang-up ends it."""
        url = element.get("url", "")
        connect_url, signed_url = stream_urls(self.public_url, self.webhook_origin, url)
        parameters = {p.get("name", ""): p.get("value", "") for p in element.findall("Parameter")}
        stream = TwilioStream(
            connect_url, signed_url=signed_url, auth_token=self.auth_token, call_sid=call.sid,
            account_sid=call.account_sid, parameters=parameters,
        )
        call.stream, call.stream_callback = stream, element.get("statusCallback", "")
        try:
            await stream.connect()
        except Exception as exc:  # refused: Twilio goes on with the next verb
            call.stream = None
            call.stream_errors.append(repr(exc))
            self._notify()
            return
        await stream.start()
        await self._stream_status(call, "stream-started")
        await stream.closed.wait()  # the server closed it: Twilio goes on with the next verb
        if call.stream is stream:
            call.stream = None
            await self._stream_status(call, "stream-stopped", stream)

    async def _stop_stream(self, call: FakeCall) -> None:
        stream, call.stream = call.stream, None
        if stream is None:
            return
        if not stream.closed.is_set():
            try:
                await stream.stop()
            except Exception:  # the server closed it meanwhile
                pass
        await stream.close()
        await self._stream_status(call, "stream-stopped", stream)

    async def _stream_status(self, call: FakeCall, event: str, stream: TwilioStream | None = None) -> None:
        stream = stream or call.stream
        if not call.stream_callback or stream is None:
            return
        params = {
            "AccountSid": call.account_sid, "CallSid": call.sid, "StreamSid": stream.stream_sid,
            "StreamEvent": event, "Timestamp": datetime.now(timezone.utc).isoformat(),
        }
        await self._post("stream-status", call.stream_callback, params)

    async def _record_verb(self, call: FakeCall, verb: ET.Element) -> None:
        """``<Record>``: a short message is "left", its callbacks posted, then the action's TwiML runs."""
        callback = verb.get("recordingStatusCallback", "")
        events = set((verb.get("recordingStatusCallbackEvent") or "completed").split())
        recording = {
            "sid": _new_sid("RE"), "status": "in-progress", "channels": 1, "source": "RecordVerb",
            "created": _now_rfc2822(), "started": time.time() - 3, "callback": callback, "events": events,
        }
        call.recordings[recording["sid"]] = recording
        if callback and "in-progress" in events:
            await self._recording_callback(call, recording)
        self._finish_recording(call, recording)
        recording["status"] = "completed"
        action = verb.get("action")
        if action:
            extra = {
                "RecordingUrl": f"https://api.twilio.com{API}/Accounts/{call.account_sid}/Recordings/{recording['sid']}",
                "RecordingSid": recording["sid"], "RecordingDuration": recording["duration"], "Digits": "hangup",
            }
            await self._fetch_and_execute(call, action, "action", extra)
        else:
            await self._end(call, "completed")

    async def _end(self, call: FakeCall, status: str) -> None:
        """The call ends: its stream stops, recordings complete, and the completed callback goes out."""
        if call.status in TERMINAL:
            return
        await self._stop_stream(call)
        for recording in call.recordings.values():
            if recording["status"] in ("in-progress", "paused"):
                self._finish_recording(call, recording)
        call.status = status
        call.ended = time.time()
        self._notify()
        extra = {}
        if call.answered is not None:
            extra["CallDuration"] = str(int(call.ended - call.answered))
        await self._status(call, "completed", **extra)
