"""The admin's talk page: staff only, and it points the browser at the relay."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db


def test_the_talk_page_is_for_staff_only(client):
    response = client.get("/admin/talk/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(get_user_model().objects.create_user("visitor", is_staff=False))
    response = client.get("/admin/talk/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_talk_page_names_the_agent_and_carries_its_audio_code(client):
    client.force_login(get_user_model().objects.create_user("staff", is_staff=True))
    response = client.get("/admin/talk/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-relay-path="/talk/relay/"' in page
    assert "<strong>ScriptedAgent</strong>" in page  # no MEDIASTREAM["AGENT"]: the embedded demo agent
    assert 'registerProcessor("pcm16-capture"' in page  # the capture worklet, inline
    assert "echoCancellation: true" in page
    for label in ("Talk", "Interrupt", "Stop"):
        assert f">{label}</button>" in page
