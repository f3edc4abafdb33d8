"""Admin live-call controls: say a line on a call from its admin page."""

import base64

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse


from .streams import live_stream, make_call

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff_client(django_user_model, client):
    user = django_user_model.objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(user)
    return client


async def test_say_a_line_from_the_call_page_reaches_the_live_stream(staff_client):
    async with live_stream() as (comm, call, stream_sid):
        page = await sync_to_async(staff_client.get)(reverse("admin:voicecall_call_change", args=[call.pk]))
        say_url = reverse("admin:voicecall_call_say", args=[call.pk])
        assert say_url in page.content.decode()
        response = await sync_to_async(staff_client.post)(say_url, {"text": "An operator says hello."})
        assert response.status_code == 302
        frame = await comm.receive_json_from(timeout=5)
        assert frame["event"] == "media" and frame["streamSid"] == stream_sid
        audio = base64.b64decode(frame["media"]["payload"])
        assert audio and len(audio) % 160 == 0  # whole 20 ms frames


async def test_say_on_a_call_without_stream_says_so(staff_client):
    call, _ = await make_call()
    say_url = reverse("admin:voicecall_call_say", args=[call.pk])
    page = await sync_to_async(staff_client.get)(reverse("admin:voicecall_call_change", args=[call.pk]))
    assert say_url not in page.content.decode()
    response = await sync_to_async(staff_client.post)(say_url, {"text": "hello?"}, follow=True)
    assert "has no live stream" in response.content.decode()


async def test_interrupt_action_clears_live_calls(staff_client):
    async with live_stream() as (comm, call, stream_sid):
        changelist = reverse("admin:voicecall_call_changelist")
        response = await sync_to_async(staff_client.post)(
            changelist, {"action": "interrupt_calls", "_selected_action": [call.pk]}, follow=True
        )
        assert "Sent interrupt to 1 live call" in response.content.decode()
        frame = await comm.receive_json_from(timeout=5)
        assert frame == {"event": "clear", "streamSid": stream_sid}
