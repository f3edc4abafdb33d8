"""WebSocket routes: the media stream path, with and without its trailing slash."""

import re

from django.urls import re_path

from .conf import app_settings
from .consumers import MediaStreamConsumer

__all__ = ["websocket_urlpatterns"]

_path = re.escape(app_settings.STREAM_PATH.strip("/"))

websocket_urlpatterns = [
    re_path(rf"^{_path}/?$", MediaStreamConsumer.as_asgi()),
]
