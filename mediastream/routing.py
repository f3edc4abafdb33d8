"""WebSocket routes: the media stream path, and a clean refusal for every other path.

``websocket_urlpatterns`` is the list of the app's routes: the media stream at
voicecall's ``VOICECALL["STREAM_PATH"]`` (the path the voice TwiML points
Twilio at, with and without its trailing slash), and the staff console of a
call at ``/admin-console/calls/<CallSid>/`` (:mod:`mediastream.console.routing`:
that route carries its own session auth and origin check, so this list needs
no middleware around it), and the browser talk relay at ``/talk/relay/``
(:mod:`mediastream.talk.routing`, wrapped the same way). Projects that
compose their own router add it to theirs; more routes are appended to this list.

:func:`websocket_router` is what ``mediastream.asgi`` serves: those routes,
then a catch-all that refuses any other path at the handshake (daphne answers
403) with one rate-limited log line. Channels' ``URLRouter`` on its own raises
``ValueError`` for an unknown path, which daphne logs as a traceback and
answers with a 500, for anyone who knocks on a wrong path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from channels.routing import URLRouter
from django.urls import re_path

from voicecall.conf import voicecall_settings
from voicecall.logsafe import sanitize

from .console.routing import console_urlpatterns
from .consumers import MediaStreamConsumer
from .refusals import refusals
from .talk.routing import talk_urlpatterns

__all__ = ["websocket_urlpatterns", "websocket_router", "refuse_unrouted", "media_stream_pattern"]


def media_stream_pattern() -> str:
    """The regex (as URLRouter matches it: no leading slash) of the media stream path."""
    return rf"^{re.escape(voicecall_settings.STREAM_PATH.strip('/'))}/?$"


websocket_urlpatterns = [
    re_path(media_stream_pattern(), MediaStreamConsumer.as_asgi(), name="media-stream"),
    *console_urlpatterns,
    *talk_urlpatterns,
]


async def refuse_unrouted(scope, receive, send) -> None:
    """Refuse a WebSocket whose path no route serves: closed before accept, so daphne answers 403."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    client = scope.get("client") or ("-", 0)
    refusals.refused(
        "unrouted path",
        "Refused a WebSocket for %s from %s: no route serves that path",
        sanitize(scope.get("path", "")),
        sanitize(client[0]),
    )
    await send({"type": "websocket.close"})


def websocket_router(patterns: Sequence | None = None) -> URLRouter:
    """A URLRouter over ``patterns`` (default: :data:`websocket_urlpatterns`) that refuses unrouted paths."""
    routes = list(websocket_urlpatterns if patterns is None else patterns)
    return URLRouter([*routes, re_path(r"", refuse_unrouted, name="unrouted")])
