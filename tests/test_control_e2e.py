"""Call control end to end: place_call -> fake Twilio -> signed webhooks and a media stream on a real daphne.

The fake plays Twilio's side of every call it creates (tests/fake_twilio),
so these tests see what a deployment sees: the voice webhook answering
``<Connect><Stream>``, the stream admitted by the consumer, status callbacks
applied in order, and the effect of each REST request on the live call.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from voicecall import control
from voicecall.events import ControlEvent, TwilioEvent
from voicecall.limits import end_overdue_calls
from voicecall.models import AnsweredBy, Call, CallEvent, CallStatus, MediaStream, Recording

from .control_support import FROM, TO, fake_twilio, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def live(daphne):
    with daphne.start(name="control") as server:
        yield server


def live_stream_of(call_sid: str) -> MediaStream:
    return wait_until(lambda: MediaStream.objects.filter(call__call_sid=call_sid, stopped_at__isnull=True).first())


def status_of(call_sid: str) -> str:
    return Call.objects.get(call_sid=call_sid).status


def assert_every_callback_accepted(fake) -> None:
    assert fake.errors == []
    refused = [(c.kind, c.url, c.status) for c in fake.callbacks if c.status != 200]
    assert refused == []


def test_a_placed_call_streams_until_it_is_hung_up(live):
    with fake_twilio(webhook_origin=live.http) as fake:
        call = control.place_call(TO, FROM, metadata={"campaign": "spring"})
        stream = live_stream_of(call.call_sid)
        wait_until(lambda: status_of(call.call_sid) == CallStatus.IN_PROGRESS)
        assert fake.calls[call.call_sid].stream.stream_sid == stream.stream_sid

        assert control.hang_up(call.call_sid) == "completed"
        ended = wait_until(lambda: Call.objects.filter(call_sid=call.call_sid, status=CallStatus.COMPLETED).first())
        fake.wait_for(lambda: fake.callbacks_of("stream-status", call.call_sid)[1:])
        # The fake records a callback once our answer is back: the database may have it first.
        fake.wait_for(lambda: len(fake.callbacks_of("status", call.call_sid)) >= 4)
        assert_every_callback_accepted(fake)
        statuses = [c.params["CallStatus"] for c in fake.callbacks_of("status", call.call_sid)]
        assert statuses == ["initiated", "ringing", "in-progress", "completed"]
        assert [c.params["StreamEvent"] for c in fake.callbacks_of("stream-status")] == ["stream-started", "stream-stopped"]
    assert wait_until(lambda: MediaStream.objects.get(pk=stream.pk).stopped_at)
    assert ended.answered_at is not None and ended.duration is not None
    assert ended.metadata == {"campaign": "spring"}
    types = list(CallEvent.objects.filter(call=ended).values_list("type", flat=True))
    assert types[0] == ControlEvent.PLACED and ControlEvent.HUNG_UP in types and TwilioEvent.CALL_VOICE in types


def test_answering_machine_detection_lands_on_the_call(live):
    with fake_twilio(webhook_origin=live.http, answered_by="machine_end_beep") as fake:
        call = control.place_call(TO, FROM, machine_detection="DetectMessageEnd")
        answered = wait_until(lambda: Call.objects.filter(call_sid=call.call_sid).exclude(answered_by="").first())
        assert answered.answered_by == AnsweredBy.MACHINE_END_BEEP
        amd = CallEvent.objects.get(call=answered, type=TwilioEvent.CALL_AMD)
        assert amd.payload["MachineDetectionDuration"] == "2315"
        control.hang_up(call.call_sid)
        fake.wait_for(lambda: fake.calls[call.call_sid].ended)
        assert_every_callback_accepted(fake)


def test_transfer_ends_the_stream_and_dials_the_destination(live):
    with fake_twilio(webhook_origin=live.http) as fake:
        call = control.place_call(TO, FROM)
        stream = live_stream_of(call.call_sid)
        control.transfer(call.call_sid, "+14155550100")
        fake.wait_for(lambda: fake.calls[call.call_sid].dialed == ["+14155550100"])
        wait_until(lambda: MediaStream.objects.get(pk=stream.pk).stopped_at)
        assert status_of(call.call_sid) == CallStatus.IN_PROGRESS  # the caller is talking to the destination now
        control.hang_up(call.call_sid)
        wait_until(lambda: status_of(call.call_sid) == CallStatus.COMPLETED)
        assert_every_callback_accepted(fake)


def test_a_recording_of_the_live_call_is_stored_with_its_callbacks(live):
    with fake_twilio(webhook_origin=live.http) as fake:
        call = control.place_call(TO, FROM)
        live_stream_of(call.call_sid)
        wait_until(lambda: status_of(call.call_sid) == CallStatus.IN_PROGRESS)
        recording = control.start_recording(call.call_sid)
        assert recording.status == "in-progress" and recording.channels == 2
        [create] = fake.requests_to(f"/Calls/{call.call_sid}/Recordings.json")
        assert create.form["RecordingStatusCallback"] == ["https://voice.example.com/twilio/recording-status/"]
        assert create.form["RecordingStatusCallbackEvent"] == ["in-progress completed absent"]
        assert control.stop_recording(call.call_sid) == "stopped"
        assert fake.requests_to(f"/Recordings/Twilio.CURRENT.json")[0].form == {"Status": ["stopped"]}
        done = wait_until(lambda: Recording.objects.filter(pk=recording.pk, status="completed").first())
        assert done.url.endswith(f"/Recordings/{recording.recording_sid}") and done.duration >= 1
        control.hang_up(call.call_sid)
        wait_until(lambda: status_of(call.call_sid) == CallStatus.COMPLETED)
        assert_every_callback_accepted(fake)
    assert CallEvent.objects.filter(call__call_sid=call.call_sid, type=TwilioEvent.RECORDING_STATUS).count() == 2


def test_voicemail_records_a_message_then_the_call_ends(live):
    with fake_twilio(webhook_origin=live.http) as fake:
        call = control.place_call(TO, FROM)
        live_stream_of(call.call_sid)
        control.send_to_voicemail(call.call_sid)
        wait_until(lambda: status_of(call.call_sid) == CallStatus.COMPLETED)
        assert fake.calls[call.call_sid].said == ["Please leave a message after the tone."]
        assert fake.callbacks_of("action", call.call_sid)[0].status == 200
        assert_every_callback_accepted(fake)
    message = wait_until(lambda: Recording.objects.filter(call__call_sid=call.call_sid, status="completed").first())
    assert message.url and message.source == "RecordVerb"


@override_settings(VOICECALL={"MAX_CALL_SECONDS": 60, "MAX_CALL_GOODBYE": "Time is up. Goodbye."})
def test_a_call_over_the_time_limit_is_ended_with_a_goodbye(live):
    with fake_twilio(webhook_origin=live.http) as fake:
        call = control.place_call(TO, FROM)
        assert fake.requests_to("/Calls.json")[0].form["TimeLimit"] == [str(60 + 60)]
        live_stream_of(call.call_sid)
        wait_until(lambda: status_of(call.call_sid) == CallStatus.IN_PROGRESS)
        assert end_overdue_calls() == []  # not yet
        later = timezone.now() + timedelta(seconds=61)
        [ended] = end_overdue_calls(now=later)
        assert (ended.call_sid, ended.error) == (call.call_sid, "")
        wait_until(lambda: status_of(call.call_sid) == CallStatus.COMPLETED)
        assert fake.calls[call.call_sid].said == ["Time is up. Goodbye."]
        assert end_overdue_calls(now=later) == []
        assert_every_callback_accepted(fake)
    assert CallEvent.objects.filter(call__call_sid=call.call_sid, type=ControlEvent.TIME_LIMIT).count() == 1


@pytest.mark.asyncio
async def test_the_async_twins_place_and_hang_up_a_streamed_call(daphne):
    from asgiref.sync import sync_to_async

    async with daphne.astart(name="control-async") as server:
        with fake_twilio(webhook_origin=server.http) as fake:
            call = await control.aplace_call(TO, FROM)
            await sync_to_async(live_stream_of)(call.call_sid)
            assert await control.ahang_up(call.call_sid) == "completed"
            await sync_to_async(wait_until)(lambda: status_of(call.call_sid) == CallStatus.COMPLETED)
            assert_every_callback_accepted(fake)
