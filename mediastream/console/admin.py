"""The console on voicecall's call admin page: a panel that follows the call live.

Contributed through voicecall's extension point like mediastream's other
controls (registered by ``mediastream.admin``). The panel is shown to anyone
who may watch the call; its controls only to those who may act on it (the
socket checks both again).
"""

from __future__ import annotations

from django.contrib.admin import ModelAdmin
from django.http import HttpRequest

from voicecall.admin_controls import CallControl, Panel
from voicecall.models import Call

from .access import may_act, may_watch
from .conf import console_settings
from .routing import console_path

__all__ = ["ConsoleControl"]


class ConsoleControl(CallControl):
    name = "mediastream.console"

    def panels(self, model_admin: ModelAdmin, request: HttpRequest, call: Call) -> list[Panel]:
        if not may_watch(request.user):
            return []
        context = {
            "socket_path": console_path(call.call_sid),
            "call_sid": call.call_sid,
            "can_act": may_act(request.user),
            "max_say_chars": console_settings().max_say_chars,
        }
        return [Panel("mediastream/console/panel.html", context)]
