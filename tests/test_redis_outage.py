"""A Redis restart must not cost a call: audio goes on, commands come back.

A real daphne on a Redis of the test's own (``tests.faults``), ten live calls,
then Redis is killed for three seconds and started again, empty, as after a
crash. During the outage every call keeps playing and listening; after it,
commands reach every call again within ten seconds (the consumers join their
groups again).
"""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from mediastream.api import ainterrupt, aspeak
from voicecall.models import CallEvent, MediaStream

from .faults import private_redis
from .live import CONSTANT_TTS
from .streams import hang_up, open_call, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

CALLS = 10
OUTAGE_SECONDS = 3.0
RECOVERY_DEADLINE = 10.0
#: About 12 s of agent speech with the constant TTS: it plays through the outage.
LONG_LINE = "This line keeps playing while the control plane is away. " * 5


async def _reachable(call_sid: str, deadline: float) -> float | None:
    """Seconds until an interrupt reaches the call's stream again (None: not before the deadline)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() < deadline:
        try:
            if await ainterrupt(call_sid, "after the outage", wait=True) is not None:
                return loop.time() - start
        except Exception:  # this process's own link to Redis may still be reconnecting
            await asyncio.sleep(0.2)
    return None


async def test_calls_survive_a_redis_restart_and_take_commands_again(daphne):
    with private_redis() as redis:
        async with daphne.astart({"TTS": CONSTANT_TTS}, name="redis-outage", redis_url=redis.url) as live:
            with override_settings(CHANNEL_LAYERS=live.channel_layers()):
                calls = [await open_call(live) for _ in range(CALLS)]
                for call, stream in calls:
                    await aspeak(call.call_sid, LONG_LINE)
                for _, stream in calls:
                    await stream.next_event("media", timeout=10)

                redis.kill()
                frames_before = [len(stream.media_frames) for _, stream in calls]
                for _, stream in calls:
                    await stream.send_dtmf("5")
                await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself
                frames_during = [len(stream.media_frames) for _, stream in calls]
                redis.start()

                # Audio kept flowing to every caller, and no socket was closed.
                assert all(after > before + 25 for before, after in zip(frames_before, frames_during)), (
                    frames_before,
                    frames_during,
                )
                assert not [stream.close_code for _, stream in calls if stream.closed.is_set()]
                # Listening went on: the DTMF sent during the outage reached each stream and its event log.
                for call, _ in calls:
                    await wait_for(lambda sid=call.call_sid: CallEvent.objects.filter(call__call_sid=sid, type="dtmf").exists())

                deadline = asyncio.get_running_loop().time() + RECOVERY_DEADLINE
                delays = await asyncio.gather(*(_reachable(call.call_sid, deadline) for call, _ in calls))
                assert None not in delays, f"calls unreachable {RECOVERY_DEADLINE}s after Redis came back: {delays}"
                print(f"\ncommands reach all {CALLS} calls again {max(delays):.1f}s after Redis came back")

                # The interrupt went through to the socket: every call got a clear.
                for _, stream in calls:
                    assert stream.clears >= 1
                for _, stream in calls:
                    row = await hang_up(stream)
                    assert row.close_reason == "socket closed"
                assert await database_sync_to_async(MediaStream.objects.filter(stopped_at__isnull=True).count)() == 0
