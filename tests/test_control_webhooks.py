"""The webhooks call control adds (AMD, recording status) and the voice webhook's overflow answer."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from django.test import Client

from voicecall import capacity
from voicecall.events import TwilioEvent
from voicecall.models import AnsweredBy, Call, CallEvent, CallStatus, MediaStream, Recording
from voicecall.signals import call_answered_by, recording_status_changed

from .control_support import signed_post
from .support import voicecall_overrides

pytestmark = pytest.mark.django_db(transaction=True)  # signals are sent on commit

ACCOUNT = "AC" + "0" * 32
CALL_SID = "CA" + "4" * 32
RECORDING_SID = "RE" + "5" * 32


@pytest.fixture
def client():
    return Client()


def voice_params(call_sid: str = CALL_SID) -> dict[str, str]:
    return {
        "CallSid": call_sid, "AccountSid": ACCOUNT, "From": "+15005550006", "To": "+14155551212",
        "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01",
    }


def twiml(response) -> ET.Element:
    assert response.status_code == 200, response.content
    return ET.fromstring(response.content)


@pytest.fixture
def received():
    """Every call_answered_by / recording_status_changed signal sent during the test."""
    seen: list[tuple[str, dict]] = []

    def on_amd(sender, **kwargs):
        seen.append(("amd", kwargs))

    def on_recording(sender, **kwargs):
        seen.append(("recording", kwargs))

    call_answered_by.connect(on_amd, dispatch_uid="test-amd")
    recording_status_changed.connect(on_recording, dispatch_uid="test-recording")
    yield seen
    call_answered_by.disconnect(dispatch_uid="test-amd")
    recording_status_changed.disconnect(dispatch_uid="test-recording")


# --- Overflow -----------------------------------------------------------------------------


def live_stream_on_another_call() -> None:
    other = Call.objects.create(call_sid="CA" + "6" * 32, status=CallStatus.IN_PROGRESS)
    MediaStream.objects.create(call=other, stream_sid="MZ" + "6" * 32)


@voicecall_overrides(MAX_LIVE_STREAMS=1)
def test_at_capacity_the_voice_webhook_says_busy_and_hangs_up_without_a_token(client):
    live_stream_on_another_call()
    root = twiml(signed_post(client, "/twilio/voice/", voice_params()))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root.find("Say").text == "All our lines are busy. Please call again later."
    call = Call.objects.get(call_sid=CALL_SID)
    assert call.stream_token_hash == ""  # no stream can be opened for it
    event = CallEvent.objects.get(call=call, type=TwilioEvent.CALL_VOICE)
    assert event.payload["answer"] == "overflow" and "MAX_LIVE_STREAMS is 1" in event.payload["reason"]


@voicecall_overrides(MAX_LIVE_STREAMS=1, OVERFLOW={"SAY": "Connecting you to a person.", "DIAL": "+14155550100"})
def test_the_overflow_answer_can_dial_a_number(client):
    live_stream_on_another_call()
    root = twiml(signed_post(client, "/twilio/voice/", voice_params()))
    assert root.find("Say").text == "Connecting you to a person."
    assert root.find("Dial/Number").text == "+14155550100"


@voicecall_overrides(MAX_LIVE_STREAMS=2)
def test_below_capacity_the_call_gets_its_stream(client):
    live_stream_on_another_call()
    root = twiml(signed_post(client, "/twilio/voice/", voice_params()))
    assert root.find("Connect/Stream") is not None


def test_a_registered_capacity_check_turns_calls_away_and_a_failing_one_does_not(client):
    def draining():
        return "this deployment is draining"

    def broken():
        raise RuntimeError("bug in a check")

    capacity.register_check(broken)
    try:
        root = twiml(signed_post(client, "/twilio/voice/", voice_params()))
        assert root.find("Connect/Stream") is not None  # a broken check counts as "not full"
        capacity.register_check(draining)
        root = twiml(signed_post(client, "/twilio/voice/", voice_params("CA" + "7" * 32)))
        assert root.find("Connect/Stream") is None and root.find("Hangup") is not None
    finally:
        capacity.unregister_check(broken)
        capacity.unregister_check(draining)
    event = CallEvent.objects.get(call__call_sid="CA" + "7" * 32, type=TwilioEvent.CALL_VOICE)
    assert event.payload["reason"] == "this deployment is draining"


# --- Answering-machine detection --------------------------------------------------------


def amd_params(answered_by: str, call_sid: str = CALL_SID) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": ACCOUNT, "AnsweredBy": answered_by, "MachineDetectionDuration": "4120"}


def test_the_amd_callback_sets_answered_by_and_sends_the_signal(client, received):
    Call.objects.create(call_sid=CALL_SID, status=CallStatus.IN_PROGRESS, direction="outbound-api")
    response = signed_post(client, "/twilio/amd-status/", amd_params("machine_end_beep"))
    assert twiml(response).tag == "Response"
    call = Call.objects.get(call_sid=CALL_SID)
    assert call.answered_by == AnsweredBy.MACHINE_END_BEEP
    assert CallEvent.objects.get(call=call, type=TwilioEvent.CALL_AMD).payload["AnsweredBy"] == "machine_end_beep"
    [(kind, kwargs)] = received
    assert kind == "amd" and kwargs["answered_by"] == "machine_end_beep" and kwargs["detection_ms"] == 4120
    assert kwargs["call"].call_sid == CALL_SID


def test_an_undocumented_answered_by_is_stored_as_unknown(client, received):
    signed_post(client, "/twilio/amd-status/", amd_params("robot\nwith a newline"))
    assert Call.objects.get(call_sid=CALL_SID).answered_by == AnsweredBy.UNKNOWN
    assert received[0][1]["answered_by"] == "unknown"


def test_the_amd_webhook_is_signed_like_every_other(client):
    response = client.post("/twilio/amd-status/", amd_params("human"))
    assert response.status_code == 403
    assert not Call.objects.exists()


# --- Recording status -----------------------------------------------------------------------


def recording_params(status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT, "CallSid": CALL_SID, "RecordingSid": RECORDING_SID, "RecordingStatus": status,
        "RecordingChannels": "2", "RecordingSource": "StartCallRecordingAPI",
        "RecordingStartTime": "Tue, 01 Dec 2026 10:00:00 +0000", **extra,
    }


def test_recording_callbacks_fill_the_recording_and_a_late_one_changes_nothing(client, received):
    Call.objects.create(call_sid=CALL_SID, status=CallStatus.IN_PROGRESS)
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING_SID}"
    signed_post(client, "/twilio/recording-status/", recording_params("completed", RecordingUrl=url, RecordingDuration="42"))
    signed_post(client, "/twilio/recording-status/", recording_params("in-progress", RecordingDuration="0"))
    recording = Recording.objects.get(recording_sid=RECORDING_SID)
    assert (recording.status, recording.url, recording.duration, recording.channels) == ("completed", url, 42, 2)
    assert recording.started_at is not None and recording.call.call_sid == CALL_SID
    assert CallEvent.objects.filter(type=TwilioEvent.RECORDING_STATUS).count() == 2  # both are in the log
    assert [(kind, kwargs["status"]) for kind, kwargs in received] == [("recording", "completed")]


def test_a_record_verb_action_completes_its_recording_and_ends_the_call(client):
    params = {
        "AccountSid": ACCOUNT, "CallSid": CALL_SID, "RecordingSid": RECORDING_SID, "RecordingDuration": "7",
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING_SID}",
        "Digits": "hangup",
    }
    root = twiml(signed_post(client, "/twilio/recording-status/", params))
    assert len(root) == 0  # empty TwiML: Twilio hangs up
    assert Recording.objects.get(recording_sid=RECORDING_SID).status == "completed"
