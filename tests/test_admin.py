"""Admin for support: find calls, read their streams, transcript and events, change nothing."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from voicecall.admin import call_duration, format_duration
from voicecall.models import Call, CallEvent, CallStatus, MediaStream, TranscriptSegment

pytestmark = pytest.mark.django_db

SID_DONE = "CA" + "a" * 32
SID_LIVE = "CA" + "b" * 32
STREAM_SID = "MZ" + "c" * 32


@pytest.fixture
def calls():
    now = timezone.now()
    done = Call.objects.create(
        call_sid=SID_DONE,
        direction="inbound",
        from_number="+15005550006",
        to_number="+14155551212",
        status=CallStatus.COMPLETED,
        answered_at=now - timedelta(minutes=3),
        ended_at=now - timedelta(seconds=55),
        duration=125,
        stream_token_hash="f" * 64,
        last_sequence_number=3,
    )
    stream = MediaStream.objects.create(call=done, stream_sid=STREAM_SID, close_reason="call ended")
    TranscriptSegment.objects.create(call=done, stream=stream, speaker="caller", text="I would like a pizza")
    CallEvent.objects.create(
        call=done, stream=stream, type="stream.started", payload={"StreamSid": STREAM_SID}
    )
    live = Call.objects.create(
        call_sid=SID_LIVE,
        direction="outbound-api",
        from_number="+14155551212",
        to_number="+15005550099",
        status=CallStatus.IN_PROGRESS,
        answered_at=now - timedelta(seconds=90),
    )
    return done, live


def changelist(admin_client, **query):
    response = admin_client.get(reverse("admin:voicecall_call_changelist"), query)
    assert response.status_code == 200
    return response.content.decode()


def test_changelist_lists_calls_with_duration(admin_client, calls):
    page = changelist(admin_client)
    assert SID_DONE in page and SID_LIVE in page
    assert "02:05" in page  # Twilio's CallDuration as mm:ss
    assert "(live)" in page  # the ongoing call shows its running duration
    assert page.index(SID_LIVE) < page.index(SID_DONE)  # newest first


def test_changelist_filters_by_status_and_direction(admin_client, calls):
    page = changelist(admin_client, status__exact="completed")
    assert SID_DONE in page and SID_LIVE not in page
    page = changelist(admin_client, direction__exact="outbound-api")
    assert SID_LIVE in page and SID_DONE not in page


@pytest.mark.parametrize("term", [SID_DONE, "5005550006", STREAM_SID])
def test_changelist_search_by_sid_number_or_stream(admin_client, calls, term):
    page = changelist(admin_client, q=term)
    assert SID_DONE in page
    assert SID_LIVE not in page


def test_call_page_shows_streams_transcript_and_events_read_only(admin_client, calls):
    done, _ = calls
    response = admin_client.get(reverse("admin:voicecall_call_change", args=[done.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert STREAM_SID in page
    assert "I would like a pizza" in page
    assert "stream.started" in page
    for prefix in ("streams", "transcript", "events"):  # inlines allow no new rows, no edits
        assert f'name="{prefix}-MAX_NUM_FORMS" value="0"' in page
        assert f'name="{prefix}-0-DELETE"' not in page
    assert 'name="transcript-0-text"' not in page
    # Twilio identifiers are shown, not editable.
    assert "f" * 64 in page
    assert 'name="call_sid"' not in page
    assert 'name="stream_token_hash"' not in page


def test_calls_cannot_be_added_by_hand(admin_client):
    assert admin_client.get(reverse("admin:voicecall_call_add")).status_code == 403


@pytest.mark.parametrize("model", ["mediastream", "callevent"])
def test_stream_and_event_admins_are_view_only(admin_client, calls, model):
    assert admin_client.get(reverse(f"admin:voicecall_{model}_changelist")).status_code == 200
    assert admin_client.get(reverse(f"admin:voicecall_{model}_add")).status_code == 403
    obj = MediaStream.objects.get() if model == "mediastream" else CallEvent.objects.get()
    page = admin_client.get(reverse(f"admin:voicecall_{model}_change", args=[obj.pk]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()


def test_duration_formatting():
    assert format_duration(125) == "02:05"
    assert format_duration(3725) == "62:05"
    assert format_duration(None) == ""
    now = timezone.now()
    live = Call(status=CallStatus.IN_PROGRESS, answered_at=now - timedelta(seconds=90))
    assert call_duration(live, now=now) == (90, True)
    ended = Call(status=CallStatus.COMPLETED, answered_at=now - timedelta(seconds=90), ended_at=now)
    assert call_duration(ended, now=now) == (90, False)
    assert call_duration(Call(status=CallStatus.RINGING)) == (None, False)
