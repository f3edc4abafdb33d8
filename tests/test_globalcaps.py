"""The global connection count in Redis: one limit across processes, expiry of a dead one's count, Redis outages.

Each ``GlobalCaps`` here stands for one process (its own server id) on the
shared Redis under a key of the test's own; the end-to-end test with two
daphne processes is tests/test_global_limits.py.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from mediastream.globalcaps import GlobalCaps, GlobalLimits, limits_from_settings, setting_errors

from .faults import private_redis
from .settings import TEST_REDIS_URL


def limits(key: str, url: str = TEST_REDIS_URL, **kw) -> GlobalLimits:
    return GlobalLimits(redis_url=url, key=key, max_connections=kw.pop("max_connections", 3), **kw)


@pytest_asyncio.fixture
async def key():
    name = f"mstest:caps:{uuid.uuid4().hex}"
    yield name
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    await client.delete(name)
    await client.aclose()


@pytest.mark.asyncio
async def test_one_limit_holds_across_processes_and_a_release_frees_a_slot(key):
    a, b = GlobalCaps(limits(key), "host/ns:1"), GlobalCaps(limits(key), "host/ns:2")
    assert await a.acquire("a1") and await a.acquire("a2") and await b.acquire("b1")
    assert not await b.acquire("b2") and not await a.acquire("a3")  # 3 open across the two
    assert await a.total() == 3
    a.release("a1")
    a.release("a1")  # twice: counted once
    assert await a.total() == 2  # the end is in a's next write, made at once
    assert await b.acquire("b2")
    assert not await a.acquire("a4")
    assert (a.held, b.held) == ({"a2"}, {"b1", "b2"})


@pytest.mark.asyncio
async def test_parked_sockets_hold_no_global_slot(key):
    parked: set[str] = set()
    a = GlobalCaps(limits(key, max_connections=2), "host/ns:1", lambda: parked)
    b = GlobalCaps(limits(key, max_connections=2), "host/ns:2")
    assert await a.acquire("a1") and await a.acquire("a2")
    assert not await b.acquire("b1")
    parked.add("a1")  # displaced by a newer silent socket (mediastream.admission): no slot
    assert await a.total() == 1  # a's next write (any handshake, end or refresh) counts it out
    assert await b.acquire("b1")
    parked.discard("a1")  # it sent start after all: it counts again
    assert await a.total() == 3


@pytest.mark.asyncio
async def test_concurrent_handshakes_never_exceed_the_limit(key):
    processes = [GlobalCaps(limits(key, max_connections=10), f"host/ns:{n}") for n in range(4)]
    results = await asyncio.gather(*(p.acquire(f"{i}-{n}") for i, p in enumerate(processes) for n in range(8)))
    assert sum(results) == 10
    assert await processes[0].total() == 10


@pytest.mark.asyncio
async def test_a_killed_process_stops_counting_within_its_lease(key):
    dead = GlobalCaps(limits(key, lease_seconds=1.0), "host/ns:dead")
    live = GlobalCaps(limits(key, lease_seconds=1.0), "host/ns:live")
    for n in range(3):
        assert await dead.acquire(f"d{n}")
    dead._writer.cancel()  # as SIGKILL would: no release, no refresh
    assert not await live.acquire("l0")
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    while not await live.acquire("l0"):
        assert loop.time() - killed_at < 5.0, "the dead process's count did not expire"
        await asyncio.sleep(0.05)
    assert loop.time() - killed_at <= 2.0
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    assert [field for field in await client.hkeys(key) if field.startswith(b"host/ns:dead")] == []  # gone
    await client.aclose()


@pytest.mark.asyncio
async def test_a_live_process_keeps_its_count_beyond_the_lease(key):
    holder = GlobalCaps(limits(key, lease_seconds=0.6, max_connections=2), "host/ns:holder")
    other = GlobalCaps(limits(key, lease_seconds=0.6, max_connections=2), "host/ns:other")
    assert await holder.acquire("h1") and await holder.acquire("h2")
    refreshed = 0
    while refreshed < 4:  # four refreshes: well past the lease
        await asyncio.sleep(0.2)
        refreshed += 1
        assert not await other.acquire("o1")
    holder.release("h1")
    await holder.total()
    assert await other.acquire("o1")


@pytest.mark.asyncio
async def test_redis_down_admits_up_to_the_local_caps_logs_once_and_counts_them_when_back(key, caplog):
    caplog.set_level(logging.WARNING, logger="mediastream.globalcaps")
    with private_redis() as redis:
        caps = GlobalCaps(limits(key, url=redis.url, max_connections=2), "host/ns:1")
        assert await caps.acquire("c1")
        redis.kill()
        for n in range(2, 6):  # over the global limit: the process's own caps decide meanwhile
            assert await caps.acquire(f"c{n}")
        caps.release("c5")
        lost = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(lost) == 1
        redis.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while caps.down:
            assert loop.time() < deadline, "the caps did not see Redis back"
            await asyncio.sleep(0.05)
        assert any("Redis back" in r.getMessage() for r in caplog.records)
        assert await caps.total() == 4  # c1..c4, admitted while it was away, are counted now
        other = GlobalCaps(limits(key, url=redis.url, max_connections=2), "host/ns:2")
        assert not await other.acquire("o1")


@pytest.mark.asyncio
async def test_a_redis_that_does_not_answer_costs_a_handshake_at_most_the_timeout(key):
    import socket

    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        caps = GlobalCaps(limits(key, url=url, timeout=0.2), "host/ns:1")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await caps.acquire("c1")
        assert loop.time() - started < 1.0
        started = loop.time()
        assert await caps.acquire("c2")  # known down: no wait at all
        assert loop.time() - started < 0.05
        caps._writer.cancel()


def test_settings_follow_the_channel_layer():
    values = {"MAX_CONNECTIONS": 128, "GLOBAL_LIMITS": {"ENABLED": None, "LEASE_SECONDS": 15, "TIMEOUT": 0.25}}
    redis_layer = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://10.0.0.5:6379/2", "socket_timeout": None}], "prefix": "app"},
        }
    }
    got = limits_from_settings(values, redis_layer)
    assert (got.redis_url, got.key, got.max_connections) == ("redis://10.0.0.5:6379/2", "app:mediastream:connections", 128)
    assert limits_from_settings(values, {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}) is None
    off = {**values, "GLOBAL_LIMITS": {**values["GLOBAL_LIMITS"], "ENABLED": False}}
    assert limits_from_settings(off, redis_layer) is None
    own = {"MAX_CONNECTIONS": 128, "GLOBAL_LIMITS": {"ENABLED": True, "REDIS_URL": "redis://r:1/0", "MAX_CONNECTIONS": 500}}
    got = limits_from_settings(own, {})
    assert (got.redis_url, got.key, got.max_connections) == ("redis://r:1/0", "asgi:mediastream:connections", 500)
    assert setting_errors({"GLOBAL_LIMITS": {"ENABLED": True, "LEASE_SECONDS": 0, "TIMEOUT": 1}}, {}) == [
        "MEDIASTREAM['GLOBAL_LIMITS']['ENABLED'] is True but there is no Redis: set its REDIS_URL "
        "or use channels_redis as the default channel layer.",
        "MEDIASTREAM['GLOBAL_LIMITS']['LEASE_SECONDS'] must be a positive number, got 0.",
    ]


def test_manage_py_check_names_wrong_drain_and_global_limit_settings(settings):
    from mediastream.checks import check_settings

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.MEDIASTREAM = {
        **settings.MEDIASTREAM,
        "DRAIN_GRACE_SECONDS": -1,
        "HEALTH_DATABASE_TIMEOUT": 0,
        "GLOBAL_LIMITS": {"ENABLED": True},
    }
    found = {(error.id, error.msg) for error in check_settings()}
    assert ("mediastream.E001", "MEDIASTREAM['DRAIN_GRACE_SECONDS'] must be zero or more, got -1.") in found
    assert ("mediastream.E001", "MEDIASTREAM['HEALTH_DATABASE_TIMEOUT'] must be a positive number, got 0.") in found
    assert any(id_ == "mediastream.E020" and "there is no Redis" in msg for id_, msg in found)
    settings.MEDIASTREAM = {**settings.MEDIASTREAM, "DRAIN_GRACE_SECONDS": 0, "HEALTH_DATABASE_TIMEOUT": 1, "GLOBAL_LIMITS": {}}
    assert not [error for error in check_settings() if error.id in ("mediastream.E001", "mediastream.E020")]
