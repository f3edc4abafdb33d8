"""A ready ASGI application: ``ASGI_APPLICATION = "mediastream.asgi.application"``.

Django serves HTTP (the project's own URLs, ``voicecall``'s webhooks among
them; a sync view's middleware and view on one thread hop, :mod:`mediastream.http`); WebSockets go to :func:`mediastream.routing.websocket_router`: the
media stream routes, and a 403 for any other path. Serve it with daphne and
the project's settings, as for any Django project::

    DJANGO_SETTINGS_MODULE=mysite.settings daphne mediastream.asgi:application

Loading it also installs the daphne fixes (a shutdown that first drains the
process, :mod:`mediastream.draining`, then tears down every stream; an access
log without query strings; a fast path for plain text frames,
:mod:`mediastream.daphne_frames`), starts the startup probes
(:mod:`mediastream.preflight`) and the speech backends' warm-up
(:mod:`mediastream.startup`) as soon as daphne serves, and last imports what
streams use and freezes the objects of start-up out of the garbage collector's
passes (:mod:`mediastream.collector`): :func:`ready_to_serve`. The load balancer's health check is a Django
view, :mod:`mediastream.health`, for the project's URLs.

No AuthMiddlewareStack or origin validator on the WebSocket side: Twilio sends
neither cookies nor Origin; it is authenticated by X-Twilio-Signature and the
per-call stream token instead. Projects that compose their own router use
``mediastream.routing.websocket_urlpatterns`` and call
:func:`install_daphne_fixes` and, last in their ASGI module,
:func:`ready_to_serve` themselves.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if not os.environ.get("DJANGO_SETTINGS_MODULE") and not settings.configured:
    raise ImproperlyConfigured(
        "mediastream.asgi serves your project: set DJANGO_SETTINGS_MODULE to its settings, "
        "e.g. DJANGO_SETTINGS_MODULE=mysite.settings daphne mediastream.asgi:application"
    )

from .http import get_asgi_application  # noqa: E402

# Django is set up (apps loaded) before the consumers are imported. A sync view (the webhooks)
# runs its whole middleware chain on one thread hop from the event loop (mediastream.http).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from . import daphne_access, daphne_frames, daphne_shutdown, preflight, startup  # noqa: E402
from .collector import freeze_startup_objects  # noqa: E402
from .routing import websocket_router  # noqa: E402

__all__ = ["application", "django_asgi_app", "install_daphne_fixes", "ready_to_serve"]


def install_daphne_fixes() -> None:
    """Drain before daphne's shutdown; daphne 4.2 cancels no application at shutdown when any connection
    has none (so streams would end without their teardown), its access log prints raw query strings, and
    its WebSocket frame parsing (autobahn's, in pure Python) costs more than the stream's own work: fix all four."""
    daphne_shutdown.install()
    daphne_access.install()
    daphne_frames.install()


def ready_to_serve() -> None:
    """Call last in the ASGI module: once daphne serves, run the startup probes and warm the speech backends up;
    now, import what streams use (so the first call does not import it on the event loop) and freeze everything
    loaded so far out of the garbage collector's passes (it all lives as long as the process)."""
    preflight.start_when_serving()
    startup.start_when_serving()
    startup.prepare()
    freeze_startup_objects()


install_daphne_fixes()
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_router(),
    }
)
ready_to_serve()
