"""The call admin's extension point: controls add URLs, actions, object tools and panels."""

import pytest
from django.contrib import admin
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path, reverse

from voicecall import admin_controls
from voicecall.admin import CallAdmin
from voicecall.admin_controls import CallControl, ObjectTool, Panel
from voicecall.models import Call

pytestmark = pytest.mark.django_db

PANEL_TEMPLATE = "probe/panel.html"


@admin.action(description="Probe the selected calls", permissions=["change"])
def probe_calls(model_admin, request, queryset):
    model_admin.message_user(request, f"Probed {queryset.count()} call(s).")


class ProbeControl(CallControl):
    name = "tests.probe"

    def get_urls(self, model_admin):
        def view(request, object_id):
            return HttpResponse(f"probed {object_id}")

        return [path("<path:object_id>/probe/", model_admin.admin_site.admin_view(view), name="voicecall_call_probe")]

    def get_actions(self, model_admin):
        return [probe_calls]

    def object_tools(self, model_admin, request, call):
        return [ObjectTool("Probe it", reverse("admin:voicecall_call_probe", args=[call.pk]))]

    def panels(self, model_admin, request, call):
        return [Panel(PANEL_TEMPLATE, {"word": "hello"})]


class FreshURLConf:
    """The project's admin URLs, collected now (after the probe registered)."""

    def __init__(self):
        self.urlpatterns = [path("admin/", admin.site.urls)]


def templates_with_panel(settings):
    engine = {**settings.TEMPLATES[0], "APP_DIRS": False}
    engine["OPTIONS"] = {
        **engine["OPTIONS"],
        "loaders": [
            ("django.template.loaders.locmem.Loader", {PANEL_TEMPLATE: "<p>panel {{ panel.word }} on {{ original }}</p>"}),
            "django.template.loaders.app_directories.Loader",
        ],
    }
    return [engine]


@pytest.fixture
def probe(settings):
    admin_controls.register(ProbeControl())
    try:
        with override_settings(ROOT_URLCONF=FreshURLConf(), TEMPLATES=templates_with_panel(settings)):
            yield
    finally:
        admin_controls.unregister(ProbeControl.name)


@pytest.fixture
def call():
    return Call.objects.create(call_sid="CA" + "d" * 32)


def test_call_admin_is_voicecalls_own_registered_once():
    assert type(admin.site._registry[Call]) is CallAdmin


def test_mediastream_registers_its_speech_controls():
    assert "mediastream.speech" in [control.name for control in admin_controls.registered_controls()]


def test_a_control_adds_a_link_a_panel_and_a_view(admin_client, call, probe):
    page = admin_client.get(reverse("admin:voicecall_call_change", args=[call.pk])).content.decode()
    probe_url = reverse("admin:voicecall_call_probe", args=[call.pk])
    assert f'<a href="{probe_url}">Probe it</a>' in page
    assert f"<p>panel hello on {call.call_sid}</p>" in page
    assert admin_client.get(probe_url).content.decode() == f"probed {call.pk}"


def test_a_control_adds_a_changelist_action(admin_client, call, probe):
    changelist = reverse("admin:voicecall_call_changelist")
    assert 'value="probe_calls"' in admin_client.get(changelist).content.decode()
    response = admin_client.post(changelist, {"action": "probe_calls", "_selected_action": [call.pk]}, follow=True)
    assert "Probed 1 call(s)." in response.content.decode()


def test_an_unregistered_control_adds_nothing(admin_client, call):
    page = admin_client.get(reverse("admin:voicecall_call_change", args=[call.pk])).content.decode()
    assert "Probe it" not in page and "panel hello" not in page
    assert 'value="probe_calls"' not in admin_client.get(reverse("admin:voicecall_call_changelist")).content.decode()


def test_register_needs_a_name_and_replaces_by_name():
    with pytest.raises(ValueError):
        admin_controls.register(CallControl())
    first, second = ProbeControl(), ProbeControl()
    try:
        admin_controls.register(first)
        admin_controls.register(second)
        probes = [control for control in admin_controls.registered_controls() if control.name == ProbeControl.name]
        assert probes == [second]
    finally:
        admin_controls.unregister(ProbeControl.name)
