"""The console's WebSocket route, wrapped in its own auth, so the app's router stays plain.

The media stream's route must not carry session auth or an origin check
(Twilio sends neither cookies nor Origin), so the console's application is
wrapped by itself: ``AllowedHostsOriginValidator`` (a page of another origin
cannot open it with the staff member's cookies) around Channels'
``AuthMiddlewareStack`` (the admin's session). ``mediastream.routing`` lists
:data:`console_urlpatterns` in ``websocket_urlpatterns``; a project's own
router that includes those gets the wrapping too.
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from .consumer import CallConsole

__all__ = ["CONSOLE_PATH", "console_path", "console_application", "console_urlpatterns"]

#: Where a call's console socket is: ``/admin-console/calls/<CallSid>/``.
CONSOLE_PATH = "admin-console/calls/"


def console_path(call_sid: str) -> str:
    return f"/{CONSOLE_PATH}{call_sid}/"


def console_application():
    """The console consumer behind the origin check and the session's user."""
    return AllowedHostsOriginValidator(AuthMiddlewareStack(CallConsole.as_asgi()))


console_urlpatterns = [
    re_path(rf"^{CONSOLE_PATH}(?P<call_sid>[A-Za-z0-9]{{2,64}})/?$", console_application(), name="call-console"),
]
