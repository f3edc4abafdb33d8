"""The console on the call's admin page, and the call records it sits among (read-only, readable)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from mediastream.console.routing import console_path
from voicecall.models import Call, CallEvent, CallStatus, MediaStream

pytestmark = pytest.mark.django_db


@pytest.fixture
def call():
    call = Call.objects.create(call_sid="CA" + "c" * 32, status=CallStatus.IN_PROGRESS)
    stream = MediaStream.objects.create(call=call, stream_sid="MZ" + "c" * 32, stats={"media_frames": 12, "sequence_gaps": 0})
    CallEvent.objects.create(call=call, stream=stream, type="transcript.final", payload={"text": "<b>hi</b> & bye", "start_ms": 0})
    return call


def logged_in(client, django_user_model, *codenames: str):
    user = django_user_model.objects.create_user("staffer", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="voicecall", codename__in=codenames))
    client.force_login(user)
    return client


def change_page(client, call: Call) -> str:
    response = client.get(reverse("admin:voicecall_call_change", args=[call.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_changer_gets_the_console_with_labelled_controls(client, django_user_model, call):
    html = change_page(logged_in(client, django_user_model, "view_call", "change_call"), call)
    assert f'data-socket-path="{console_path(call.call_sid)}"' in html and 'data-can-act="true"' in html
    assert '<label for="call-console-say">Say</label>' in html and 'id="call-console-say"' in html
    for label in ('data-action="say">Say<', 'data-action="interrupt">Interrupt<', 'data-action="hang_up">Hang up<',
                  'data-action="transfer">Transfer<'):
        assert label in html
    assert '<label for="call-console-transfer">Transfer to</label>' in html
    assert "mediastream/console/console.js" in html and "mediastream/console/console.css" in html
    assert 'name="_save"' not in html and "deletelink" not in html, "still read-only"


def test_a_viewer_follows_the_call_without_controls(client, django_user_model, call):
    html = change_page(logged_in(client, django_user_model, "view_call"), call)
    assert 'id="call-console"' in html and 'data-can-act="false"' in html
    assert 'data-action="say"' not in html and 'id="call-console-say"' not in html
    assert "acting on it needs the “change call” permission" in html


def test_payloads_and_stats_are_pretty_printed_and_escaped(admin_client, call):
    html = change_page(admin_client, call)
    assert '<pre class="readonly-json">{\n  &quot;start_ms&quot;: 0,\n  &quot;text&quot;: &quot;&lt;b&gt;hi&lt;/b&gt; &amp; bye&quot;\n}</pre>' in html
    assert '&quot;media_frames&quot;: 12' in html
    event = CallEvent.objects.get()
    page = admin_client.get(reverse("admin:voicecall_callevent_change", args=[event.pk])).content.decode()
    assert '<pre class="readonly-json">' in page and "&lt;b&gt;hi" in page and "<b>hi</b>" not in page
