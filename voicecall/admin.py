"""Admin for support staff: find a call, see its streams, transcript and event log.

Everything Twilio or the media stream wrote is read-only here: the records
are evidence of what happened, and Twilio stays the source of truth for a
call's status. No record can be added, saved or deleted by hand (a page
shows no Save or Delete button); timestamps are shown to the second and JSON
(event payloads, stream stats, metadata) pretty-printed. Live
controls on a call (hang up and transfer from :mod:`voicecall.admin_twilio`,
mediastream's "say a line") come from :mod:`voicecall.admin_controls`, which
``CallAdmin`` consults for extra URLs, actions, object tools and panels. The
"change call" permission is the permission to use those controls.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import admin_controls
from .admin_controls import registered_controls
from .admin_twilio import TwilioControls
from .models import Call, CallEvent, MediaStream, Recording, TranscriptSegment

__all__ = [
    "format_duration",
    "format_timestamp",
    "call_duration",
    "pretty_json",
    "CallAdmin",
    "MediaStreamAdmin",
    "CallEventAdmin",
    "RecordingAdmin",
]


def format_duration(seconds: float | int | None) -> str:
    """``mm:ss`` (minutes may exceed 59), or "" when unknown."""
    if seconds is None:
        return ""
    total = max(0, int(seconds))
    return f"{total // 60:02d}:{total % 60:02d}"


def format_timestamp(value: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS TZ`` in the current time zone, or "" (the admin's default drops the seconds)."""
    if value is None:
        return ""
    return date_format(timezone.localtime(value), "Y-m-d H:i:s T")


def at_second(field: str, description: str):
    """A display method showing the ``field`` timestamp to the second, sortable by the field."""

    @admin.display(description=description, ordering=field)
    def display(self, obj) -> str:
        return format_timestamp(getattr(obj, field)) or self.get_empty_value_display()

    display.__name__ = f"{field}_display"
    return display


def pretty_json(value) -> str:
    """``value`` as indented JSON in a ``<pre>`` (the admin's default is one long line), escaped."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="readonly-json">{}</pre>', text)


def as_json(field: str, description: str):
    """A display method showing the JSON ``field`` pretty-printed."""

    @admin.display(description=description)
    def display(self, obj) -> str:
        value = getattr(obj, field)
        return pretty_json(value) if value not in (None, "", {}, []) else self.get_empty_value_display()

    display.__name__ = f"{field}_json"
    return display


def call_duration(call: Call, now: datetime | None = None) -> tuple[int | None, bool]:
    """``(seconds, live)``: Twilio's duration, else ended minus answered, else time since answered."""
    if call.duration is not None:
        return call.duration, False
    if call.answered_at is None:
        return None, False
    if call.ended_at is not None:
        return int((call.ended_at - call.answered_at) / timedelta(seconds=1)), False
    if call.is_terminal:
        return None, False
    return int(((now or timezone.now()) - call.answered_at) / timedelta(seconds=1)), True


class ReadOnlyInline(admin.TabularInline):
    """An inline that shows rows and never adds, changes or deletes them."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class MediaStreamInline(ReadOnlyInline):
    model = MediaStream
    fields = ("stream_sid", "started", "stopped", "close_code", "close_reason", "server", "stats_json")
    readonly_fields = fields
    show_change_link = True
    started = at_second("started_at", _("started at"))
    stopped = at_second("stopped_at", _("stopped at"))
    stats_json = as_json("stats", _("stats"))


class TranscriptSegmentInline(ReadOnlyInline):
    model = TranscriptSegment
    fields = ("created", "speaker", "text", "is_final", "interrupted", "start_ms", "end_ms")
    readonly_fields = fields
    created = at_second("created_at", _("created at"))


class CallEventInline(ReadOnlyInline):
    model = CallEvent
    fields = ("created", "type", "stream", "payload_json")
    readonly_fields = fields
    created = at_second("created_at", _("created at"))
    payload_json = as_json("payload", _("payload"))

    def get_queryset(self, request: HttpRequest) -> QuerySet[CallEvent]:
        return super().get_queryset(request).select_related("stream")


class RecordingInline(ReadOnlyInline):
    model = Recording
    fields = ("recording_sid", "status", "started", "duration", "channels", "url", "error_code", "updated")
    readonly_fields = fields
    started = at_second("started_at", _("started at"))
    updated = at_second("updated_at", _("updated at"))


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = (
        "call_sid",
        "from_number",
        "to_number",
        "direction",
        "status",
        "answered_by",
        "created",
        "duration_display",
    )
    list_filter = ("status", "direction", "answered_by")
    search_fields = ("call_sid", "from_number", "to_number", "streams__stream_sid")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    list_per_page = 50
    inlines = (MediaStreamInline, RecordingInline, TranscriptSegmentInline, CallEventInline)
    fieldsets = (
        (None, {"fields": ("call_sid", "status", "direction", "from_number", "to_number", "answered_by")}),
        (
            _("Timing"),
            {"fields": ("created", "answered", "ended", "duration_display", "updated")},
        ),
        (_("Placed by this app"), {"fields": ("agent_json", "metadata_json")}),
        (
            _("Twilio"),
            {"fields": ("account_sid", "last_sequence_number", "stream_token_hash")},
        ),
    )
    readonly_fields = (
        "call_sid",
        "status",
        "direction",
        "from_number",
        "to_number",
        "answered_by",
        "created",
        "answered",
        "ended",
        "duration_display",
        "updated",
        "agent_json",
        "metadata_json",
        "account_sid",
        "last_sequence_number",
        "stream_token_hash",
    )
    created = at_second("created_at", _("created at"))
    answered = at_second("answered_at", _("answered at"))
    ended = at_second("ended_at", _("ended at"))
    updated = at_second("updated_at", _("updated at"))
    agent_json = as_json("agent", _("agent"))
    metadata_json = as_json("metadata", _("metadata"))

    @admin.display(description=_("duration"), ordering="duration")
    def duration_display(self, call: Call) -> str:
        seconds, live = call_duration(call)
        if seconds is None:
            return self.get_empty_value_display()
        text = format_duration(seconds)
        return f"{text} ({_('live')})" if live else text

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        """A call's page is view-only; "change call" on the list is what actions (the live controls) need."""
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    # --- Live controls contributed through voicecall.admin_controls ---------------

    change_form_template = "admin/voicecall/call/change_form.html"

    @property
    def actions(self) -> list:
        """The registered controls' actions (the site-wide ones, e.g. delete, come on top)."""
        return [action for control in registered_controls() for action in control.get_actions(self)]

    def get_urls(self) -> list:
        extra = [pattern for control in registered_controls() for pattern in control.get_urls(self)]
        return [*extra, *super().get_urls()]  # first: the admin's "<id>/" catch-all would take them

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        call = self.get_object(request, unquote(object_id))
        controls = self.controls_context(request, call) if call is not None else {}
        return super().change_view(request, object_id, form_url, {**controls, **(extra_context or {})})

    def controls_context(self, request: HttpRequest, call: Call) -> dict:
        """``call_object_tools`` and ``call_panels`` for the change form template."""
        controls = registered_controls()
        return {
            "call_object_tools": [tool for control in controls for tool in control.object_tools(self, request, call)],
            "call_panels": [panel for control in controls for panel in control.panels(self, request, call)],
        }


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """View-only admin: records written by the webhooks and the media stream consumer."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        """Every field, timestamps replaced by their to-the-second display."""
        names = [field.name for field in self.model._meta.fields]
        shown = {name: f"{name}_s" for name in names if hasattr(self, f"{name}_s")}
        return [shown.get(name, name) for name in names]

    def get_fields(self, request: HttpRequest, obj=None):
        return self.get_readonly_fields(request, obj)


@admin.register(MediaStream)
class MediaStreamAdmin(ReadOnlyModelAdmin):
    list_display = ("stream_sid", "call", "started_at_s", "stopped_at_s", "close_code", "close_reason", "server")
    list_filter = ("close_code",)
    search_fields = ("=stream_sid", "=call__call_sid")
    list_select_related = ("call",)
    ordering = ("-started_at",)
    date_hierarchy = "started_at"
    started_at_s = at_second("started_at", _("started at"))
    stopped_at_s = at_second("stopped_at", _("stopped at"))
    heartbeat_at_s = at_second("heartbeat_at", _("heartbeat at"))
    tracks_s = as_json("tracks", _("tracks"))
    media_format_s = as_json("media_format", _("media format"))
    custom_parameters_s = as_json("custom_parameters", _("custom parameters"))
    stats_s = as_json("stats", _("stats"))


@admin.register(CallEvent)
class CallEventAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at_s", "type", "call", "stream")
    list_filter = ("type",)
    search_fields = ("=call__call_sid", "=stream__stream_sid", "type")
    list_select_related = ("call", "stream")
    ordering = ("-created_at", "-id")
    date_hierarchy = "created_at"
    created_at_s = at_second("created_at", _("created at"))
    payload_s = as_json("payload", _("payload"))


@admin.register(Recording)
class RecordingAdmin(ReadOnlyModelAdmin):
    list_display = ("recording_sid", "call", "status", "started_at_s", "duration", "url")
    list_filter = ("status",)
    search_fields = ("=recording_sid", "=call__call_sid")
    list_select_related = ("call",)
    ordering = ("-created_at",)
    started_at_s = at_second("started_at", _("started at"))
    created_at_s = at_second("created_at", _("created at"))
    updated_at_s = at_second("updated_at", _("updated at"))


admin_controls.register(TwilioControls())
