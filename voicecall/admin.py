"""Admin for support staff: find a call, see its streams, transcript and event log.

Everything Twilio or the media stream wrote is read-only here: the records
are evidence of what happened, and Twilio stays the source of truth for a
call's status. Calls cannot be added by hand. Live controls on a call (e.g.
mediastream's "say a line") come from :mod:`voicecall.admin_controls`, which
``CallAdmin`` consults for extra URLs, actions, object tools and panels.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .admin_controls import registered_controls
from .models import Call, CallEvent, MediaStream, TranscriptSegment

__all__ = [
    "format_duration",
    "call_duration",
    "CallAdmin",
    "MediaStreamAdmin",
    "CallEventAdmin",
]


def format_duration(seconds: float | int | None) -> str:
    """``mm:ss`` (minutes may exceed 59), or "" when unknown."""
    if seconds is None:
        return ""
    total = max(0, int(seconds))
    return f"{total // 60:02d}:{total % 60:02d}"


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
    fields = ("stream_sid", "started_at", "stopped_at", "close_code", "close_reason", "server", "stats")
    readonly_fields = fields
    show_change_link = True


class TranscriptSegmentInline(ReadOnlyInline):
    model = TranscriptSegment
    fields = ("created_at", "speaker", "text", "is_final", "interrupted", "start_ms", "end_ms")
    readonly_fields = fields


class CallEventInline(ReadOnlyInline):
    model = CallEvent
    fields = ("created_at", "type", "stream", "payload")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[CallEvent]:
        return super().get_queryset(request).select_related("stream")


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = (
        "call_sid",
        "from_number",
        "to_number",
        "direction",
        "status",
        "created_at",
        "duration_display",
    )
    list_filter = ("status", "direction")
    search_fields = ("call_sid", "from_number", "to_number", "streams__stream_sid")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    list_per_page = 50
    inlines = (MediaStreamInline, TranscriptSegmentInline, CallEventInline)
    fieldsets = (
        (None, {"fields": ("call_sid", "status", "direction", "from_number", "to_number")}),
        (
            _("Timing"),
            {"fields": ("created_at", "answered_at", "ended_at", "duration_display", "updated_at")},
        ),
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
        "created_at",
        "answered_at",
        "ended_at",
        "duration_display",
        "updated_at",
        "account_sid",
        "last_sequence_number",
        "stream_token_hash",
    )

    @admin.display(description=_("duration"), ordering="duration")
    def duration_display(self, call: Call) -> str:
        seconds, live = call_duration(call)
        if seconds is None:
            return self.get_empty_value_display()
        text = format_duration(seconds)
        return f"{text} ({_('live')})" if live else text

    def has_add_permission(self, request: HttpRequest) -> bool:
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


@admin.register(MediaStream)
class MediaStreamAdmin(ReadOnlyModelAdmin):
    list_display = ("stream_sid", "call", "started_at", "stopped_at", "close_code", "close_reason", "server")
    list_filter = ("close_code",)
    search_fields = ("=stream_sid", "=call__call_sid")
    list_select_related = ("call",)
    ordering = ("-started_at",)
    date_hierarchy = "started_at"


@admin.register(CallEvent)
class CallEventAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "type", "call", "stream")
    list_filter = ("type",)
    search_fields = ("=call__call_sid", "=stream__stream_sid", "type")
    list_select_related = ("call", "stream")
    ordering = ("-created_at", "-id")
    date_hierarchy = "created_at"
