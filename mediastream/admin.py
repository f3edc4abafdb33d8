"""Live-call controls in the admin: say a line on a call, or cut it off.

Extends voicecall's read-only ``CallAdmin`` rather than replacing it: the
records stay read-only, and these views only send commands through
``mediastream.api`` (so they reach the call in whichever process holds it).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from voicecall.admin import CallAdmin
from voicecall.models import Call

from .api import interrupt, speak

__all__ = ["LiveCallAdmin", "SayForm"]


class SayForm(forms.Form):
    text = forms.CharField(
        label=_("Say"), max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Spoken with the configured TTS backend, after anything already queued."),
    )


def _has_live_stream(call: Call) -> bool:
    return call.streams.filter(stopped_at__isnull=True).exists()


class LiveCallAdmin(CallAdmin):
    change_form_template = "admin/mediastream/call/change_form.html"
    actions = ["interrupt_calls"]

    def get_urls(self):
        urls = super().get_urls()
        say = path(
            "<path:object_id>/say/",
            self.admin_site.admin_view(self.say_view),
            name="voicecall_call_say",
        )
        return [say, *urls]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        call = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), "live_stream": call is not None and _has_live_stream(call)}
        return super().change_view(request, object_id, form_url, extra_context)

    def say_view(self, request: HttpRequest, object_id: str):
        call = get_object_or_404(Call, pk=object_id)
        if not self.has_view_permission(request, call) or not request.user.has_perm("voicecall.change_call"):
            raise PermissionDenied
        change_url = reverse("admin:voicecall_call_change", args=[call.pk])
        form = SayForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            if not _has_live_stream(call):
                self.message_user(request, _("%(call)s has no live stream.") % {"call": call}, messages.ERROR)
                return HttpResponseRedirect(change_url)
            item_id = speak(call.call_sid, form.cleaned_data["text"])
            self.message_user(request, _("Queued %(item)s on %(call)s.") % {"item": item_id, "call": call}, messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Say a line on %(call)s") % {"call": call},
            "opts": self.model._meta,
            "original": call,
            "form": form,
            "live_stream": _has_live_stream(call),
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/mediastream/call/say.html", context)

    @admin.action(description=_("Interrupt what the selected calls are saying"), permissions=["change"])
    def interrupt_calls(self, request: HttpRequest, queryset):
        live = queryset.filter(streams__stopped_at__isnull=True).distinct()
        for call in live:
            interrupt(call.call_sid, "admin")
        self.message_user(request, _("Sent interrupt to %(count)d live call(s).") % {"count": live.count()})


admin.site.unregister(Call)
admin.site.register(Call, LiveCallAdmin)
