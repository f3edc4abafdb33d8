"""A stream's events reach whoever follows its call, and a call no one follows costs one Redis round trip per event.

Through channels_redis' layer on a redis-server of the test's own (so its command count is this test's alone).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from mediastream.broadcasts import GroupBroadcasts

from .faults import private_redis

GROUP = "mediastream.events.CA" + "7" * 32


@pytest.fixture(scope="module")
def redis_url():
    with private_redis() as redis:
        yield redis.url


@pytest_asyncio.fixture
async def layer(redis_url):
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"broadcasts{uuid.uuid4().hex[:12]}")
    yield layer
    await layer.flush()
    await layer.close_pools()


async def _send_all(broadcasts: GroupBroadcasts, *numbers: int) -> None:
    """Queue the messages and wait (bounded) until every one has left: ``close`` sends what is queued."""
    for n in numbers:
        broadcasts.send({"type": "stream.event", "n": n})
    await broadcasts.close(5)


async def _calls(layer: RedisChannelLayer) -> dict[str, int]:
    """Commands Redis ran since the last reset, by name (those a script runs included)."""
    info = await layer.connection(0).info("commandstats")
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in info.items()}


@pytest.mark.asyncio
async def test_a_follower_gets_every_message_in_order(layer):
    follower = await layer.new_channel()
    await layer.group_add(GROUP, follower)
    broadcasts = GroupBroadcasts(layer, GROUP, "MZ1")
    await _send_all(broadcasts, 0, 1, 2)
    received = [await asyncio.wait_for(layer.receive(follower), 5) for _ in range(3)]
    assert [m["n"] for m in received] == [0, 1, 2]
    assert (broadcasts.sent, broadcasts.unheard, broadcasts.skipped) == (3, 0, 0)


@pytest.mark.asyncio
async def test_a_group_without_members_is_answered_in_one_round_trip(layer):
    await layer.connection(0).config_resetstat()
    broadcasts = GroupBroadcasts(layer, GROUP, "MZ2")
    await _send_all(broadcasts, *range(10))
    # One script per message; channels_redis' group_send sends ZREMRANGEBYSCORE, then ZRANGE.
    calls = await _calls(layer)
    assert calls.get("eval") == 10 and "zrange" not in calls, calls
    assert (broadcasts.sent, broadcasts.unheard, broadcasts.skipped) == (10, 10, 0)


@pytest.mark.asyncio
async def test_a_member_past_the_group_expiry_counts_as_none_and_is_dropped(layer):
    stale = await layer.new_channel()
    key = layer._group_key(GROUP)
    redis = layer.connection(layer.consistent_hash(GROUP))
    await redis.zadd(key, {stale: 1})  # joined in 1970: older than any group_expiry
    broadcasts = GroupBroadcasts(layer, GROUP, "MZ3")
    await _send_all(broadcasts, 0)
    assert broadcasts.unheard == 1
    assert await redis.zcard(key) == 0  # as group_send would have dropped it
    # Someone who joins now hears the next message.
    follower = await layer.new_channel()
    await layer.group_add(GROUP, follower)
    later = GroupBroadcasts(layer, GROUP, "MZ3")
    await _send_all(later, 1)
    assert (await asyncio.wait_for(layer.receive(follower), 5))["n"] == 1


@pytest.mark.asyncio
async def test_other_layers_get_group_send_itself():
    layer = InMemoryChannelLayer()
    follower = await layer.new_channel()
    await layer.group_add(GROUP, follower)
    broadcasts = GroupBroadcasts(layer, GROUP, "MZ4")
    await _send_all(broadcasts, 0)
    assert (await asyncio.wait_for(layer.receive(follower), 5))["n"] == 0
    assert (broadcasts.sent, broadcasts.unheard) == (1, 0)


@pytest.mark.asyncio
async def test_a_layer_that_overrides_group_send_gets_every_message(redis_url):
    class TracingLayer(RedisChannelLayer):
        traced: list = []

        async def group_send(self, group, message):
            self.traced.append(message["n"])
            await super().group_send(group, message)

    layer = TracingLayer(hosts=[redis_url], prefix=f"broadcasts{uuid.uuid4().hex[:12]}")
    try:
        broadcasts = GroupBroadcasts(layer, GROUP, "MZ5")
        await _send_all(broadcasts, 0, 1)  # no member, and still its group_send for each
        assert TracingLayer.traced == [0, 1] and broadcasts.unheard == 0
    finally:
        await layer.close_pools()
