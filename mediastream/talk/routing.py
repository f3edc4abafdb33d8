"""The talk relay's WebSocket route (``mediastream.routing`` includes it in ``websocket_urlpatterns``)."""

from __future__ import annotations

import re

from django.urls import re_path

from . import RELAY_PATH
from .consumer import talk_relay_application

__all__ = ["talk_urlpatterns"]

talk_urlpatterns = [
    # The application checks the session cookie and the Origin itself: the router needs no middleware.
    re_path(rf"^{re.escape(RELAY_PATH.strip('/'))}/?$", talk_relay_application, name="talk-relay"),
]
