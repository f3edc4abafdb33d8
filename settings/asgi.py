"""The demo's ASGI entry point (``daphne settings.asgi:application``): mediastream's ready application.

It only picks the demo's settings when DJANGO_SETTINGS_MODULE is unset; what
it serves is :mod:`mediastream.asgi` (Django for HTTP, the media stream routes
for WebSockets, the daphne fixes), as ``ASGI_APPLICATION`` names it.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from mediastream.asgi import application  # noqa: E402

__all__ = ["application"]
