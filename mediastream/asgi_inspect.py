"""Does an ASGI application route a WebSocket path to the media stream consumer?

``manage.py check`` asks this of the project's ``ASGI_APPLICATION`` without
serving anything: it follows Channels' routers (``ProtocolTypeRouter``,
``URLRouter``, middleware that keeps its ``inner`` app) the way they route a
connection, down to the consumer the path reaches. The answer is ``None``
when an application along the way cannot be looked into (a plain function
of the project's own): a check then says nothing rather than guess.
"""

from __future__ import annotations

from typing import Any

__all__ = ["routes_media_stream"]

#: How deep routers and middleware are followed (they do not nest deeper in practice).
MAX_DEPTH = 16


def routes_media_stream(application: Any, path: str) -> bool | None:
    """True if a WebSocket on ``path`` reaches ``MediaStreamConsumer`` (or a subclass), False if it
    provably does not, None if that cannot be told."""
    return _follow(application, path.lstrip("/"), MAX_DEPTH)


def _follow(app: Any, path: str, depth: int) -> bool | None:
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.core.handlers.asgi import ASGIHandler

    from .consumers import MediaStreamConsumer
    from .routing import refuse_unrouted

    if depth <= 0 or app is None:
        return None
    consumer = getattr(app, "consumer_class", None)
    if isinstance(consumer, type):
        return issubclass(consumer, MediaStreamConsumer)
    if app is refuse_unrouted or isinstance(app, ASGIHandler):
        return False  # a refusal, or Django's HTTP handler: no WebSockets
    if isinstance(app, ProtocolTypeRouter):
        if "websocket" not in app.application_mapping:
            return False
        return _follow(app.application_mapping["websocket"], path, depth - 1)
    if isinstance(app, URLRouter):
        for route in app.routes:
            try:
                match = route.pattern.match(path)
            except Exception:
                return None
            if match:
                remaining = match[0]
                return _follow(route.callback, remaining, depth - 1)
        return False  # URLRouter raises "No route found" for this path
    for attribute in ("inner", "application", "app"):  # middleware wrapping one app
        inner = getattr(app, attribute, None)
        if inner is not None and inner is not app:
            return _follow(inner, path, depth - 1)
    return None
