"""Make daphne's shutdown drain the process first, then cancel every application, so streams end with their records.

daphne runs ``Server.kill_all_applications`` as a reactor "before shutdown"
trigger (on SIGTERM or SIGINT). :func:`install` replaces it with one that
first drains (:func:`mediastream.draining.drain`: no new streams, the live
ones run up to ``DRAIN_GRACE_SECONDS`` and are then closed with their
records), while the reactor still serves, and then cancels what is left.

The cancelling also fixes daphne 4.2's own: it reads
``details["application_instance"]`` for every connection it lists. A
connection with no application yet, or whose application already finished
(the HTTP request that upgraded to a WebSocket stays listed for up to a second,
as does a load balancer's TCP health check) raises ``KeyError``, and then no
application is cancelled at all: every live stream dies without its teardown
(its row stays "live" until the reaper finds it). With Twilio opening streams
all the time, that is most shutdowns.

It is called from ``mediastream.asgi``; it changes nothing when daphne is not
the server, and nothing if a future daphne no longer has the method.
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["install"]

logger = logging.getLogger(__name__)


def install() -> bool:
    """Patch daphne's shutdown once; True if it is (now) patched."""
    try:
        from daphne.server import Server
        from twisted.internet import defer
    except ImportError:
        return False
    original = getattr(Server, "kill_all_applications", None)
    if original is None:
        return False
    if getattr(original, "_mediastream_patched", False):
        return True

    async def drain_then_cancel(server) -> None:
        from .draining import drain

        try:
            await drain()
        except Exception:
            logger.exception("Draining failed; cancelling every application now")
        wait_for = []
        for details in list(server.connections.values()):
            application_instance = details.get("application_instance")
            if application_instance is not None and not application_instance.done():
                application_instance.cancel()
                wait_for.append(application_instance)
        logger.info("Cancelled %d application instances for shutdown", len(wait_for))
        await asyncio.gather(*wait_for, return_exceptions=True)

    def kill_all_applications(self):
        wait_deferred = defer.Deferred.fromFuture(asyncio.ensure_future(drain_then_cancel(self)))
        wait_deferred.addErrback(lambda failure: None)
        return wait_deferred

    kill_all_applications._mediastream_patched = True
    Server.kill_all_applications = kill_all_applications
    return True
