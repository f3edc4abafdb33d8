"""The garbage collector in a process that carries live calls.

CPython's full collection walks every tracked object of the process while the
event loop waits, and a daphne process serving hundreds of streams also holds
everything it imported: Django, the apps, Twisted, the channel layer's client.
Those objects live as long as the process, so walking them finds nothing;
frozen, they are left out of every later pass (:func:`gc.freeze`), and a full
pass walks what was made after: the calls' objects, and what the speech
backends' warm-up loads once daphne serves.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_objects"]

logger = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive now out of the collector's passes; returns how many.

    Call it when the process has loaded what it serves (``mediastream.asgi``
    does, once Django and the routes are set up). Objects frozen here that
    later become cyclic garbage are not reclaimed, so call it once, not per request.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("%d objects of start-up left out of the garbage collector's passes", frozen)
    return frozen
