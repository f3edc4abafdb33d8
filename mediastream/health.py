"""A load balancer's health check for one process: 200 while it admits streams, 503 while it drains or has no database.

Include it in a project's URLs (the demo serves it at ``/healthz``)::

    path("healthz", include("mediastream.health")),

The body is small JSON about this process only: whether it drains, whether
its database answers, and its live and pending media streams; nothing from
the settings. The database is asked ``SELECT 1`` on a thread of the check's
own, at most one question at a time (checks that arrive meanwhile share its
answer) and for at most ``HEALTH_DATABASE_TIMEOUT`` seconds, so a database
that hangs makes the check answer 503 in time instead of hanging it, and
never takes a thread from the streams' own database work. A database already
known to be down (:mod:`mediastream.dbgate`) is not asked. Redis is not part
of the answer: calls go on without it (the body says whether the global
connection limit reaches it).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, connection
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache

from . import heartbeat
from .admission import registry
from .conf import app_settings
from .dbgate import database
from .draining import draining
from .globalcaps import caps

__all__ = ["health", "urlpatterns"]

logger = logging.getLogger(__name__)

_executor = ThreadPoolExecutor(1, thread_name_prefix="mediastream-health")
_asking: asyncio.Future | None = None


def _select_one() -> None:
    close_old_connections()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # with a pool: handed back


async def _database_answers() -> bool:
    """Whether the database answers within the timeout; one question in flight for every caller."""
    global _asking
    if database.down:
        return False
    loop = asyncio.get_running_loop()
    if _asking is None or _asking.done() or _asking.get_loop() is not loop:
        _asking = asyncio.ensure_future(loop.run_in_executor(_executor, _select_one))
    try:
        await asyncio.wait_for(asyncio.shield(_asking), float(app_settings.HEALTH_DATABASE_TIMEOUT))
    except Exception as exc:
        logger.debug("Health check: the database did not answer (%s)", type(exc).__name__)
        return False
    return True


@never_cache
async def health(request):
    """200 ``{"status": "ok", ...}`` or 503 with the reason in ``status``."""
    database_ok = await _database_answers()
    global_caps = caps.get()
    body = {
        "status": "draining" if draining.active else "ok" if database_ok else "database unavailable",
        "draining": draining.active,
        "database": database_ok,
        "live_streams": heartbeat.live_count(),
        "pending_streams": registry.pending_count,
        "connections": registry.open_count - len(registry.parked),
        "global_limit": None if global_caps is None else ("redis unavailable" if global_caps.down else "redis"),
    }
    response = JsonResponse(body, status=200 if body["status"] == "ok" else 503)
    # Django logs every 5xx as an error; a load balancer asks every few seconds, and the
    # drain and a database outage are each logged once by their own modules.
    response._has_been_logged = True
    return response


urlpatterns = [path("", health, name="mediastream-health")]
