"""The call admin: read-only pages (no Save, no Delete), timestamps to the second, hang-up and transfer."""

from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from voicecall import control
from voicecall.admin import format_timestamp
from voicecall.events import ControlEvent
from voicecall.models import Call, CallEvent, CallStatus, MediaStream, Recording

from .control_support import FROM, TO, fake_twilio

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt_timezone.utc)


@pytest.fixture
def fake():
    with fake_twilio() as server:
        yield server


@pytest.fixture
def ended_call():
    call = Call.objects.create(call_sid="CA" + "e" * 32, status=CallStatus.COMPLETED, created_at=AT, answered_at=AT)
    MediaStream.objects.create(call=call, stream_sid="MZ" + "e" * 32, started_at=AT, stopped_at=AT)
    CallEvent.objects.create(call=call, type="twilio.call.status", created_at=AT)
    Recording.objects.create(call=call, recording_sid="RE" + "e" * 32, status="completed", started_at=AT)
    return call


def page(client, name: str, *args) -> str:
    response = client.get(reverse(f"admin:{name}", args=args))
    assert response.status_code == 200
    return response.content.decode()


def test_a_call_page_has_no_save_or_delete_and_refuses_a_post(admin_client, ended_call):
    html = page(admin_client, "voicecall_call_change", ended_call.pk)
    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"', "deletelink"):
        assert button not in html
    url = reverse("admin:voicecall_call_change", args=[ended_call.pk])
    assert admin_client.post(url, {"status": "queued"}).status_code == 403
    assert admin_client.post(reverse("admin:voicecall_call_delete", args=[ended_call.pk]), {"post": "yes"}).status_code == 403
    assert Call.objects.get(pk=ended_call.pk).status == CallStatus.COMPLETED


def test_no_bulk_delete_on_the_list(admin_client, ended_call):
    assert "delete_selected" not in page(admin_client, "voicecall_call_changelist")


@pytest.mark.parametrize("model", ["mediastream", "callevent", "recording"])
def test_the_other_records_have_no_save_or_delete_either(admin_client, ended_call, model):
    obj = {"mediastream": MediaStream, "callevent": CallEvent, "recording": Recording}[model].objects.get()
    html = page(admin_client, f"voicecall_{model}_change", obj.pk)
    assert 'name="_save"' not in html and "deletelink" not in html
    assert format_timestamp(AT) in html
    assert admin_client.post(reverse(f"admin:voicecall_{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403


def test_timestamps_are_shown_to_the_second(admin_client, ended_call):
    assert format_timestamp(AT) == "2026-03-04 05:06:07 UTC"
    html = page(admin_client, "voicecall_call_change", ended_call.pk)
    assert html.count("2026-03-04 05:06:07 UTC") >= 5  # created, answered, stream start/stop, event, recording
    assert "2026-03-04 05:06:07 UTC" in page(admin_client, "voicecall_call_changelist")


def test_hang_up_and_transfer_are_offered_only_while_the_call_is_live(admin_client, ended_call, fake):
    live = control.place_call(TO, FROM)
    hang_up_url = reverse("admin:voicecall_call_hang_up", args=[live.pk])
    transfer_url = reverse("admin:voicecall_call_transfer", args=[live.pk])
    html = page(admin_client, "voicecall_call_change", live.pk)
    assert hang_up_url in html and transfer_url in html
    html = page(admin_client, "voicecall_call_change", ended_call.pk)
    assert reverse("admin:voicecall_call_hang_up", args=[ended_call.pk]) not in html


def test_hang_up_from_the_call_page(admin_client, fake):
    call = control.place_call(TO, FROM)
    url = reverse("admin:voicecall_call_hang_up", args=[call.pk])
    assert "End call" in page(admin_client, "voicecall_call_hang_up", call.pk)
    response = admin_client.post(url, follow=True)
    assert f"Hung up {call.call_sid}." in response.content.decode()
    assert fake.requests_to(f"/Calls/{call.call_sid}.json")[0].form == {"Status": ["completed"]}


def test_transfer_checks_the_destination_then_shows_twilios_refusal(admin_client, fake):
    call = control.place_call(TO, FROM)
    url = reverse("admin:voicecall_call_transfer", args=[call.pk])
    response = admin_client.post(url, {"to": "reception"})
    assert response.status_code == 200 and "Enter an E.164 number" in response.content.decode()
    assert fake.requests_to(f"/Calls/{call.call_sid}.json") == []
    response = admin_client.post(url, {"to": "+14155550100"}, follow=True)
    assert "Twilio error 21220" in response.content.decode()  # still queued: nothing to transfer yet
    fake.calls[call.call_sid].status = "in-progress"
    response = admin_client.post(url, {"to": "+14155550100"}, follow=True)
    assert f"Transferring {call.call_sid} to +14155550100." in response.content.decode()
    assert CallEvent.objects.filter(call=call, type=ControlEvent.TRANSFERRED).exists()


def test_the_hang_up_action_ends_the_selected_live_calls(admin_client, ended_call, fake):
    live = control.place_call(TO, FROM)
    response = admin_client.post(
        reverse("admin:voicecall_call_changelist"),
        {"action": "hang_up_calls", "_selected_action": [live.pk, ended_call.pk]},
        follow=True,
    )
    assert f"Hung up {live.call_sid}." in response.content.decode()
    assert len(fake.requests_to(".json")) == 2  # the create and one hang-up: the ended call is left alone


def test_viewers_without_change_permission_get_no_controls(client, django_user_model, fake):
    call = control.place_call(TO, FROM)
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_call"))
    client.force_login(viewer)
    html = page(client, "voicecall_call_change", call.pk)
    assert reverse("admin:voicecall_call_hang_up", args=[call.pk]) not in html
    assert client.post(reverse("admin:voicecall_call_hang_up", args=[call.pk])).status_code == 403
    assert fake.requests_to(f"/Calls/{call.call_sid}.json") == []
