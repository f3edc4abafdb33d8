"""The maximum call duration: which calls are overdue, and the hook mediastream can use to say goodbye itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from voicecall import control
from voicecall.events import ControlEvent
from voicecall.limits import deadline, end_overdue_calls, overdue_calls
from voicecall.models import Call, CallEvent, CallStatus
from voicecall.signals import call_time_limit_reached

from .control_support import FROM, TO, fake_twilio
from .support import voicecall_overrides

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def fake():
    with fake_twilio() as server:
        yield server


def answered_call(fake, seconds_ago: int) -> Call:
    """A call placed through the fake and answered ``seconds_ago``."""
    call = control.place_call(TO, FROM)
    fake.calls[call.call_sid].status = "in-progress"
    Call.objects.filter(pk=call.pk).update(
        status=CallStatus.IN_PROGRESS, answered_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return Call.objects.get(pk=call.pk)


@voicecall_overrides(MAX_CALL_SECONDS=600)
def test_only_in_progress_calls_past_the_limit_are_overdue(fake):
    overdue = answered_call(fake, 601)
    recent = answered_call(fake, 30)
    Call.objects.create(call_sid="CA" + "8" * 32, status=CallStatus.COMPLETED, answered_at=timezone.now() - timedelta(hours=9))
    assert list(overdue_calls()) == [overdue]
    assert deadline(recent) == recent.answered_at + timedelta(seconds=600)
    assert deadline(Call(status=CallStatus.RINGING)) is None


@voicecall_overrides(MAX_CALL_SECONDS=None)
def test_no_limit_no_overdue_calls(fake):
    answered_call(fake, 10 * 3600)
    assert list(overdue_calls()) == [] and end_overdue_calls() == []


@voicecall_overrides(MAX_CALL_SECONDS=60)
def test_a_receiver_that_said_goodbye_gets_a_plain_hang_up(fake):
    call = answered_call(fake, 61)
    heard = []

    def say_goodbye_on_the_stream(sender, call, limit_seconds, **kwargs):
        heard.append((call.call_sid, limit_seconds))
        return True

    call_time_limit_reached.connect(say_goodbye_on_the_stream, dispatch_uid="test-goodbye")
    try:
        [ended] = end_overdue_calls()
    finally:
        call_time_limit_reached.disconnect(dispatch_uid="test-goodbye")
    assert heard == [(call.call_sid, 60)] and ended.goodbye_by_receiver
    assert fake.requests_to(f"/Calls/{call.call_sid}.json")[0].form == {"Status": ["completed"]}
    assert CallEvent.objects.get(call=call, type=ControlEvent.TIME_LIMIT).payload["goodbye_by_receiver"] is True


@voicecall_overrides(MAX_CALL_SECONDS=60, MAX_CALL_GOODBYE="Goodbye now.")
def test_a_failing_receiver_does_not_stop_the_goodbye(fake):
    call = answered_call(fake, 61)

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    call_time_limit_reached.connect(broken, dispatch_uid="test-broken")
    try:
        end_overdue_calls()
    finally:
        call_time_limit_reached.disconnect(dispatch_uid="test-broken")
    [update] = fake.requests_to(f"/Calls/{call.call_sid}.json")
    assert "<Say>Goodbye now.</Say><Hangup />" in update.form["Twiml"][0]


@voicecall_overrides(MAX_CALL_SECONDS=60)
def test_a_call_twilio_refuses_to_end_is_tried_again_next_run(fake):
    call = answered_call(fake, 61)
    fake.fail_next(400, 21220, "Call is not in-progress. Cannot redirect.")
    [failed] = end_overdue_calls()
    assert failed.error.startswith("Twilio error 21220")
    assert list(overdue_calls()) == [call]
    [ended] = end_overdue_calls()
    assert ended.error == "" and list(overdue_calls()) == []
