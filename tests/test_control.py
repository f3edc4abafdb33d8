"""Call control against a local fake of Twilio's REST API: what is sent, what is recorded, what fails how."""

from __future__ import annotations

import pytest
from django.test import override_settings

from voicecall import control
from voicecall.control import (
    AuthenticationFailed,
    CallControlError,
    CallNotFound,
    CallNotInProgress,
    InvalidNumber,
    NotConfigured,
    RateLimited,
    TwilioUnreachable,
)
from voicecall.events import ControlEvent
from voicecall.models import Call, CallEvent, CallStatus

from .control_support import FROM, PUBLIC, TO, fake_twilio
from .fake_twilio.server import INVALID_TO
from .live import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::DeprecationWarning:twilio.*")]


@pytest.fixture
def fake():
    with fake_twilio() as server:
        yield server


def test_place_call_asks_for_our_twiml_and_every_status_event(fake):
    call = control.place_call(TO, FROM, agent="myproject.agents.Booking", metadata={"order": 42})
    [request] = fake.requests_to("/Calls.json")
    assert request.status == 201
    assert request.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    assert request.form["To"] == [TO] and request.form["From"] == [FROM]
    assert request.form["Url"] == [f"{PUBLIC}/twilio/voice/"] and request.form["Method"] == ["POST"]
    assert request.form["StatusCallback"] == [f"{PUBLIC}/twilio/status/"]
    assert request.form["StatusCallbackMethod"] == ["POST"]
    assert sorted(request.form["StatusCallbackEvent"]) == ["answered", "completed", "initiated", "ringing"]
    assert request.form["TimeLimit"] == [str(4 * 3600 + 60)]  # MAX_CALL_SECONDS + grace: Twilio's own backstop
    assert "MachineDetection" not in request.form and "AsyncAmd" not in request.form
    assert call.call_sid in fake.calls
    saved = Call.objects.get(call_sid=call.call_sid)
    assert (saved.direction, saved.to_number, saved.from_number) == ("outbound-api", TO, FROM)
    assert saved.account_sid == fake.account_sid
    assert saved.status == CallStatus.QUEUED
    assert saved.agent == "myproject.agents.Booking" and saved.metadata == {"order": 42}
    placed = CallEvent.objects.get(call=saved, type=ControlEvent.PLACED)
    assert placed.payload["to"] == TO and placed.payload["time_limit"] == 4 * 3600 + 60


def test_place_call_with_machine_detection_asks_for_async_amd(fake):
    control.place_call(TO, FROM, machine_detection="DetectMessageEnd", timeout=25, agent={"BACKEND": "myproject.agents.Booking", "OPTIONS": {"greeting": "hi"}})
    [request] = fake.requests_to("/Calls.json")
    assert request.form["MachineDetection"] == ["DetectMessageEnd"]
    assert request.form["AsyncAmd"] == ["true"]
    assert request.form["AsyncAmdStatusCallback"] == [f"{PUBLIC}/twilio/amd-status/"]
    assert request.form["AsyncAmdStatusCallbackMethod"] == ["POST"]
    assert request.form["Timeout"] == ["25"]
    assert Call.objects.get().agent == {"BACKEND": "myproject.agents.Booking", "OPTIONS": {"greeting": "hi"}}


@override_settings(VOICECALL={"MAX_CALL_SECONDS": None})
def test_no_time_limit_when_the_maximum_is_off(fake):
    control.place_call(TO, FROM)
    assert "TimeLimit" not in fake.requests_to("/Calls.json")[0].form


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_async_twins_send_the_same_requests(fake):
    call = await control.aplace_call(TO, FROM, machine_detection=True)
    [request] = fake.requests_to("/Calls.json")
    assert sorted(request.form["StatusCallbackEvent"]) == ["answered", "completed", "initiated", "ringing"]
    assert request.form["MachineDetection"] == ["Enable"]
    status = await control.ahang_up(call.call_sid)
    assert status == "canceled"  # it was still queued
    [update] = fake.requests_to(f"/Calls/{call.call_sid}.json")
    assert update.form == {"Status": ["completed"]}
    with pytest.raises(CallNotInProgress) as caught:
        await control.atransfer(call.call_sid, "+14155550000")
    assert caught.value.code == 21220


def test_hang_up_sends_status_completed_and_notes_it(fake):
    call = control.place_call(TO, FROM)
    assert control.hang_up(call.call_sid) == "canceled"
    assert fake.requests_to(f"/Calls/{call.call_sid}.json")[0].form == {"Status": ["completed"]}
    assert CallEvent.objects.filter(call=call, type=ControlEvent.HUNG_UP).exists()


@pytest.mark.parametrize(
    ("make_error", "kind", "code"),
    [
        (lambda fake: control.place_call(INVALID_TO, FROM), InvalidNumber, 21211),
        (lambda fake: fake.fail_next(429, 20429, "Too Many Requests") or control.place_call(TO, FROM), RateLimited, 20429),
        (lambda fake: control.transfer(control.place_call(TO, FROM).call_sid, "+14155550000"), CallNotInProgress, 21220),
        (lambda fake: control.hang_up("CA" + "9" * 32), CallNotFound, 20404),
    ],
    ids=["invalid-number", "rate-limited", "not-in-progress", "unknown-call"],
)
def test_twilio_errors_come_back_as_call_control_errors(fake, make_error, kind, code):
    with pytest.raises(kind) as caught:
        make_error(fake)
    assert caught.value.code == code
    assert str(caught.value).startswith(f"Twilio error {code}: ")
    assert caught.value.hint


def test_a_wrong_auth_token_is_authentication_failed(fake):
    with override_settings(TWILIO_AUTH_TOKEN="not-the-token"), pytest.raises(AuthenticationFailed) as caught:
        control.place_call(TO, FROM)
    assert caught.value.code == 20003 and caught.value.status == 401
    assert "TWILIO_AUTH_TOKEN" in caught.value.hint
    assert not Call.objects.exists()


def test_an_unreachable_api_is_twilio_unreachable():
    closed = f"http://127.0.0.1:{free_port()}"
    with override_settings(TWILIO_API_BASE_URL=closed), pytest.raises(TwilioUnreachable) as caught:
        control.hang_up("CA" + "1" * 32)
    assert closed in str(caught.value) and "TWILIO_API_BASE_URL" in caught.value.hint


@pytest.mark.asyncio
async def test_an_unreachable_api_is_twilio_unreachable_for_async_code_too():
    closed = f"http://127.0.0.1:{free_port()}"
    with override_settings(TWILIO_API_BASE_URL=closed), pytest.raises(TwilioUnreachable):
        await control.ahang_up("CA" + "1" * 32)


@pytest.mark.parametrize("missing", ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"])
def test_without_credentials_nothing_is_sent(fake, missing):
    with override_settings(**{missing: ""}), pytest.raises(NotConfigured):
        control.place_call(TO, FROM)
    assert fake.requests == []


@pytest.mark.parametrize(
    "call",
    [
        lambda: control.place_call("4155551212", FROM),
        lambda: control.place_call(TO, "sip:me@example.com"),
        lambda: control.transfer("CA" + "1" * 32, "extension 12"),
        lambda: control.hang_up("not-a-sid"),
    ],
    ids=["to-not-e164", "from-sip", "transfer-garbage", "bad-sid"],
)
def test_bad_arguments_are_refused_before_any_request(fake, call):
    with pytest.raises(CallControlError):
        call()
    assert fake.requests == []


def test_transfer_dials_a_sip_uri_with_dial_twiml(fake):
    call = control.place_call(TO, FROM)
    fake.calls[call.call_sid].status = "in-progress"  # as if answered
    control.transfer(call.call_sid, "sip:desk@pbx.example.com")
    [update] = fake.requests_to(f"/Calls/{call.call_sid}.json")
    assert update.form["Twiml"] == ['<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Sip>sip:desk@pbx.example.com</Sip></Dial></Response>']
    assert CallEvent.objects.get(call=call, type=ControlEvent.TRANSFERRED).payload["to"] == "sip:desk@pbx.example.com"
