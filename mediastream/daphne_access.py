"""Keep query strings out of daphne's access log.

daphne logs every HTTP request with its raw URI (``"POST /twilio/voice/?key=..."``),
both in ``daphne``'s own access log (on by default, to stdout) and in
``manage.py runserver``'s; a query string can carry tokens or other secrets,
and the access log is usually kept and shipped elsewhere. WebSocket entries
already log the path alone.

:func:`install` wraps ``daphne.server.Server.log_action``, through which every
access-log entry passes, so the path is logged without its query (``?...``
marks that there was one) and as one printable line. ``mediastream.asgi``
calls it; it changes nothing when daphne is not installed.
"""

from __future__ import annotations

import logging

from voicecall.logsafe import sanitize

__all__ = ["install", "redact_path"]

logger = logging.getLogger(__name__)

#: What stands in for a query string in the log.
QUERY_MARK = "?..."


def redact_path(path: object) -> str:
    """``path`` without its query string, as one printable line."""
    text = "" if path is None else str(path)
    base, has_query, _query = text.partition("?")
    return sanitize(base, limit=300) + (QUERY_MARK if has_query else "")


def install() -> bool:
    """Patch daphne's access logging once; True if it is (now) patched."""
    try:
        from daphne.server import Server
    except ImportError:
        return False
    original = getattr(Server, "log_action", None)
    if original is None:
        return False
    if getattr(original, "_mediastream_patched", False):
        return True

    def log_action(self, protocol, action, details):
        if isinstance(details, dict) and "path" in details:
            details = {**details, "path": redact_path(details["path"])}
        return original(self, protocol, action, details)

    log_action._mediastream_patched = True
    Server.log_action = log_action
    return True
