"""Hang up and transfer a call from its admin page, through Twilio's REST API (voicecall.control).

A :class:`~voicecall.admin_controls.CallControl` like any other app's:
``<id>/hang-up/`` (a confirmation page) and ``<id>/transfer/`` (a form for the
destination), linked while the call has not ended, and a "Hang up the
selected calls" action on the list. They need the "change call" permission.
Twilio's refusals (the call already ended, a number it cannot dial) are shown
as an error message on the call's page.
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

from .admin_controls import CallControl, ObjectTool
from .control import CallControlError, hang_up, transfer
from .fallback import is_destination
from .models import TERMINAL_STATUSES, Call

__all__ = ["TransferForm", "TwilioControls", "hang_up_calls"]


class TransferForm(forms.Form):
    to = forms.CharField(
        label=_("Transfer to"), max_length=256,
        help_text=_("An E.164 number (+14155551234) or a SIP URI (sip:desk@pbx.example.com)."),
    )

    def clean_to(self) -> str:
        value = self.cleaned_data["to"].strip()
        if not is_destination(value):
            raise forms.ValidationError(_("Enter an E.164 number such as +14155551234 or a sip: URI."))
        return value


def _check_permission(model_admin: ModelAdmin, request: HttpRequest, call: Call) -> None:
    if not model_admin.has_view_permission(request, call) or not request.user.has_perm("voicecall.change_call"):
        raise PermissionDenied


def _change_url(model_admin: ModelAdmin, call: Call) -> str:
    return reverse(f"{model_admin.admin_site.name}:voicecall_call_change", args=[call.pk])


def _perform(model_admin: ModelAdmin, request: HttpRequest, call: Call, operation, done: str) -> bool:
    try:
        operation()
    except CallControlError as exc:
        model_admin.message_user(request, f"{call}: {exc}. {exc.hint}", messages.ERROR)
        return False
    model_admin.message_user(request, done, messages.SUCCESS)
    return True


@admin.action(description=_("Hang up the selected calls"), permissions=["change"])
def hang_up_calls(model_admin: ModelAdmin, request: HttpRequest, queryset: QuerySet[Call]) -> None:
    live = queryset.exclude(status__in=TERMINAL_STATUSES)
    done = 0
    for call in live:
        done += _perform(
            model_admin, request, call, lambda call=call: hang_up(call.call_sid), _("Hung up %(call)s.") % {"call": call}
        )
    if not live:
        model_admin.message_user(request, _("None of the selected calls is live."), messages.WARNING)


def _page(model_admin, request, call, template: str, title: str, **extra) -> TemplateResponse:
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.model._meta,
        "original": call,
        "change_url": _change_url(model_admin, call),
        "live": call.status not in TERMINAL_STATUSES,
        **extra,
    }
    return TemplateResponse(request, template, context)


def hang_up_view(model_admin: ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """GET: confirm; POST: hang the call up and go back to its page."""
    call = get_object_or_404(Call, pk=object_id)
    _check_permission(model_admin, request, call)
    if request.method == "POST":
        _perform(model_admin, request, call, lambda: hang_up(call.call_sid), _("Hung up %(call)s.") % {"call": call})
        return HttpResponseRedirect(_change_url(model_admin, call))
    return _page(model_admin, request, call, "admin/voicecall/call/hang_up.html", _("Hang up %(call)s") % {"call": call})


def transfer_view(model_admin: ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """A form for the destination; a valid POST transfers the call and goes back to its page."""
    call = get_object_or_404(Call, pk=object_id)
    _check_permission(model_admin, request, call)
    form = TransferForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        to = form.cleaned_data["to"]
        _perform(
            model_admin, request, call, lambda: transfer(call.call_sid, to),
            _("Transferring %(call)s to %(to)s.") % {"call": call, "to": to},
        )
        return HttpResponseRedirect(_change_url(model_admin, call))
    title = _("Transfer %(call)s") % {"call": call}
    return _page(model_admin, request, call, "admin/voicecall/call/transfer.html", title, form=form)


class TwilioControls(CallControl):
    """Hang-up and transfer views (linked while the call is live) and the hang-up action."""

    name = "voicecall.twilio"

    def get_urls(self, model_admin: ModelAdmin) -> list[URLPattern]:
        def hang_up_page(request: HttpRequest, object_id: str) -> HttpResponse:
            return hang_up_view(model_admin, request, object_id)

        def transfer_page(request: HttpRequest, object_id: str) -> HttpResponse:
            return transfer_view(model_admin, request, object_id)

        site = model_admin.admin_site
        return [
            path("<path:object_id>/hang-up/", site.admin_view(hang_up_page), name="voicecall_call_hang_up"),
            path("<path:object_id>/transfer/", site.admin_view(transfer_page), name="voicecall_call_transfer"),
        ]

    def get_actions(self, model_admin: ModelAdmin) -> list:
        return [hang_up_calls]

    def object_tools(self, model_admin: ModelAdmin, request: HttpRequest, call: Call) -> list[ObjectTool]:
        if call.status in TERMINAL_STATUSES or not request.user.has_perm("voicecall.change_call"):
            return []
        site = model_admin.admin_site.name
        return [
            ObjectTool(_("Hang up"), reverse(f"{site}:voicecall_call_hang_up", args=[call.pk])),
            ObjectTool(_("Transfer"), reverse(f"{site}:voicecall_call_transfer", args=[call.pk])),
        ]
