"""Whether this deployment can take another media stream, asked by the voice webhook.

When it cannot, the voice webhook answers ``VOICECALL["OVERFLOW"]`` (say
something and hang up, or dial a number) instead of ``<Connect><Stream>``:
a stream that would be refused only gives the caller silence. The rule is
the count of live ``MediaStream`` rows against ``VOICECALL["MAX_LIVE_STREAMS"]``,
plus any check another app registers (mediastream knows its processes'
socket caps; voicecall does not import it)::

    from voicecall import capacity

    capacity.register_check(lambda: "all workers are draining" if draining() else None)

A check returns the reason it is full, or None. A check that raises is
logged and counts as "not full": a bug in it must not turn callers away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .conf import voicecall_settings
from .models import MediaStream

__all__ = ["CapacityCheck", "register_check", "unregister_check", "live_streams", "full_reason"]

logger = logging.getLogger(__name__)

CapacityCheck = Callable[[], "str | None"]

_checks: list[CapacityCheck] = []


def register_check(check: CapacityCheck) -> CapacityCheck:
    """Consult ``check`` on every voice webhook (once, however often it is registered)."""
    if check not in _checks:
        _checks.append(check)
    return check


def unregister_check(check: CapacityCheck) -> None:
    if check in _checks:
        _checks.remove(check)


def live_streams() -> int:
    """Media streams recorded as open, in every process."""
    return MediaStream.objects.filter(stopped_at__isnull=True).count()


def full_reason() -> str | None:
    """Why no stream can be taken now, or None when one can."""
    limit = voicecall_settings.MAX_LIVE_STREAMS
    if limit is not None:
        live = live_streams()
        if live >= int(limit):
            return f"{live} live streams (MAX_LIVE_STREAMS is {limit})"
    for check in tuple(_checks):
        try:
            reason = check()
        except Exception:
            logger.exception("Capacity check %r failed; counted as not full", check)
            continue
        if reason:
            return str(reason)
    return None
