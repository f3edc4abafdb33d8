"""WebSocket routes: the media stream path, with and without its trailing slash.

The path is voicecall's ``VOICECALL["STREAM_PATH"]``: the voice TwiML points
Twilio at it, so both ends read the one setting.
"""

import re

from django.urls import re_path

from voicecall.conf import voicecall_settings

from .consumers import MediaStreamConsumer

__all__ = ["websocket_urlpatterns"]

_path = re.escape(voicecall_settings.STREAM_PATH.strip("/"))

websocket_urlpatterns = [
    re_path(rf"^{_path}/?$", MediaStreamConsumer.as_asgi()),
]
