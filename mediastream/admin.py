"""Live-call controls on voicecall's call admin page: the live console, say a line, cut it off.

Contributed through voicecall's extension point (:mod:`voicecall.admin_controls`)
rather than by replacing ``CallAdmin``: the records stay voicecall's and
read-only, and these views only send commands through ``mediastream.api`` (so
they reach the call in whichever process holds it). The live console
(:mod:`mediastream.console`) is a panel on the call's page that follows the
call without reloads and carries the same controls, with their outcomes; the
"Say a line" page stays for browsers without JavaScript. Admin autodiscovery
imports this module, and so registers the control, exactly when the admin is
installed.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _

from voicecall import admin_controls
from voicecall.admin_controls import CallControl, ObjectTool
from voicecall.models import Call

from .api import interrupt, speak
from .console.admin import ConsoleControl

__all__ = ["SayForm", "SpeechControls", "interrupt_calls"]


class SayForm(forms.Form):
    text = forms.CharField(
        label=_("Say"), max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Spoken with the configured TTS backend, after anything already queued."),
    )


def _has_live_stream(call: Call) -> bool:
    return call.streams.filter(stopped_at__isnull=True).exists()


@admin.action(description=_("Interrupt what the selected calls are saying"), permissions=["change"])
def interrupt_calls(model_admin: ModelAdmin, request: HttpRequest, queryset: QuerySet[Call]) -> None:
    live = queryset.filter(streams__stopped_at__isnull=True).distinct()
    for call in live:
        interrupt(call.call_sid, "admin")
    model_admin.message_user(request, _("Sent interrupt to %(count)d live call(s).") % {"count": live.count()})


def say_view(model_admin: ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """A form that queues one line of speech on the call's live stream."""
    call = get_object_or_404(Call, pk=object_id)
    if not model_admin.has_view_permission(request, call) or not request.user.has_perm("voicecall.change_call"):
        raise PermissionDenied
    change_url = reverse(f"{model_admin.admin_site.name}:voicecall_call_change", args=[call.pk])
    form = SayForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if not _has_live_stream(call):
            model_admin.message_user(request, _("%(call)s has no live stream.") % {"call": call}, messages.ERROR)
            return HttpResponseRedirect(change_url)
        item_id = speak(call.call_sid, form.cleaned_data["text"])
        model_admin.message_user(
            request, _("Queued %(item)s on %(call)s.") % {"item": item_id, "call": call}, messages.SUCCESS
        )
        return HttpResponseRedirect(change_url)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Say a line on %(call)s") % {"call": call},
        "opts": model_admin.model._meta,
        "original": call,
        "form": form,
        "live_stream": _has_live_stream(call),
        "change_url": change_url,
    }
    return TemplateResponse(request, "admin/mediastream/call/say.html", context)


class SpeechControls(CallControl):
    """The "Say a line" view at ``<id>/say/`` (linked while the call is live) and the interrupt action."""

    name = "mediastream.speech"

    def get_urls(self, model_admin: ModelAdmin) -> list[URLPattern]:
        def view(request: HttpRequest, object_id: str) -> HttpResponse:
            return say_view(model_admin, request, object_id)

        say = path("<path:object_id>/say/", model_admin.admin_site.admin_view(view), name="voicecall_call_say")
        return [say]

    def get_actions(self, model_admin: ModelAdmin) -> list:
        return [interrupt_calls]

    def object_tools(self, model_admin: ModelAdmin, request: HttpRequest, call: Call) -> list[ObjectTool]:
        if not _has_live_stream(call):
            return []
        url = reverse(f"{model_admin.admin_site.name}:voicecall_call_say", args=[call.pk])
        return [ObjectTool(_("Say a line"), url)]


admin_controls.register(SpeechControls())
admin_controls.register(ConsoleControl())
