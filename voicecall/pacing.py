"""Outbound pacing: at most ``TWILIO_CALLS_PER_SECOND`` calls started per account, across processes.

Twilio queues or refuses (20429) calls created faster than the account's
calls-per-second, so every ``place_call`` first reserves a start slot. The
slots live in the database, one :class:`~voicecall.models.PacingSlot` row per
account holding the next free start time, because the database is the one
thing every process of the deployment shares (Redis is optional). A
reservation locks that row, takes ``max(now, next_at)`` and moves ``next_at``
one interval on; the caller then waits until its slot. This is a token bucket
of depth one: no bursts, and reservations from any number of processes come
out at least ``1 / rate`` seconds apart (on clocks kept in sync, e.g. by NTP).

The lock is held for one short transaction, never while waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .models import PacingSlot

__all__ = ["reserve", "wait_for_slot", "await_slot"]

logger = logging.getLogger(__name__)


def reserve(key: str, rate: float) -> float:
    """Reserve the next start slot for ``key`` at ``rate`` per second; return the seconds to wait for it."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    interval = timedelta(seconds=1 / rate)
    with transaction.atomic():
        slot, _created = PacingSlot.objects.select_for_update().get_or_create(
            key=key[:64], defaults={"next_at": timezone.now()}
        )
        now = timezone.now()  # read after the lock: the wait for it is not a slot
        start = max(now, slot.next_at)
        slot.next_at = start + interval
        slot.save(update_fields=["next_at"])
    return (start - now).total_seconds()


def wait_for_slot(key: str, rate: float) -> float:
    """Reserve a slot and sleep until it; return the seconds waited."""
    delay = reserve(key, rate)
    if delay > 0:
        logger.debug("Pacing %s: waiting %.3f s for the next call slot", key, delay)
        time.sleep(delay)
    return delay


async def await_slot(key: str, rate: float) -> float:
    """:func:`wait_for_slot` for async code: the reservation runs in a thread, the wait on the loop."""
    from asgiref.sync import sync_to_async

    delay = await sync_to_async(reserve)(key, rate)
    if delay > 0:
        await asyncio.sleep(delay)
    return delay
