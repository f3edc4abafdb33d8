"""Make daphne cancel every application on shutdown, so streams tear down cleanly.

daphne 4.2's ``Server.kill_all_applications`` reads
``details["application_instance"]`` for every connection it lists. A
connection with no application yet, or whose application already finished
(the HTTP request that upgraded to a WebSocket stays listed for up to a second,
as does a load balancer's TCP health check) raises ``KeyError``, and then no
application is cancelled at all: every live stream dies without its teardown
(its row stays "live" until the reaper finds it). With Twilio opening streams
all the time, that is most shutdowns.

:func:`install` replaces the method with one that skips such connections. It
is called from ``settings/asgi.py``; it changes nothing when daphne is not the
server, and nothing if a future daphne no longer has the method.
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

    def kill_all_applications(self):
        wait_for = []
        for details in list(self.connections.values()):
            application_instance = details.get("application_instance")
            if application_instance is not None and not application_instance.done():
                application_instance.cancel()
                wait_for.append(application_instance)
        logger.info("Cancelled %d application instances for shutdown", len(wait_for))
        wait_deferred = defer.Deferred.fromFuture(asyncio.gather(*wait_for))
        wait_deferred.addErrback(lambda failure: None)
        return wait_deferred

    kill_all_applications._mediastream_patched = True
    Server.kill_all_applications = kill_all_applications
    return True
