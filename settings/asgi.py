"""ASGI entry point: HTTP goes to Django, WebSockets to the media stream routes.

No AuthMiddlewareStack or origin validator on the WebSocket side: Twilio sends
neither cookies nor Origin; it is authenticated by X-Twilio-Signature and the
per-call stream token instead.
"""

import logging
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from mediastream import daphne_shutdown  # noqa: E402
from mediastream.routing import websocket_urlpatterns  # noqa: E402

# daphne 4.2 skips cancelling applications on shutdown when any connection is
# listed without one; this makes live streams tear down (see the module).
daphne_shutdown.install()

if not settings.REDIS_URL:
    logging.getLogger("mediastream").warning(
        "REDIS_URL is not set: using the in-memory channel layer, so other processes "
        "(manage.py speak, workers, other daphne processes) cannot reach calls served here."
    )

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
