"""The load balancer's health check on a real daphne: 200 with the process's streams, 503 without its database.

(503 while draining: tests/test_draining.py.) The database outage is real:
the test database refuses connections (``tests.faults.blocked_database``).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from .faults import blocked_database
from .streams import hang_up, open_call

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

def _forget_a_dead_session() -> None:
    """This thread's session, if the block ended it, is dropped (the next query opens a new one)."""
    if connection.connection is not None and not connection.is_usable():
        try:
            connection.close()
        except Exception:
            pass
        connection.connection = None


@pytest.fixture(autouse=True)
def _usable_connection():
    yield
    _forget_a_dead_session()  # pytest-django flushes the tables with this thread's session next


KEYS = {"status", "draining", "database", "live_streams", "pending_streams", "connections", "global_limit"}


async def get(live, client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.get(f"{live.http}/healthz")
    return response, loop.time() - started


async def test_health_is_200_with_the_streams_and_503_while_the_database_is_away(daphne):
    async with daphne.astart({"HEALTH_DATABASE_TIMEOUT": 1.0}, name="health") as live:
        async with httpx.AsyncClient(timeout=10) as client:
            _call, stream = await open_call(live)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            # The row is written by the admission; the stream counts as live once its parts are open, just after.
            while (response := (await get(live, client))[0]).json()["live_streams"] != 1:
                assert loop.time() < deadline, response.json()
                await asyncio.sleep(0.05)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert "no-cache" in response.headers["cache-control"]
            body = response.json()
            assert set(body) == KEYS  # and nothing else: no settings, no secrets
            assert body == {
                "status": "ok", "draining": False, "database": True, "live_streams": 1, "pending_streams": 0,
                "connections": 1, "global_limit": "redis",
            }

            with blocked_database():
                response, took = await get(live, client)
                assert response.status_code == 503
                assert response.json()["status"] == "database unavailable" and response.json()["database"] is False
                assert took < 3.0  # the check's own bound (1 s) and the request: it does not hang
                assert not stream.closed.is_set()  # the live call is not the check's business
            # The thread database_sync_to_async runs on held a session the block ended (no close_old_connections
            # on the way: it would try that session first).
            await sync_to_async(_forget_a_dead_session, thread_sensitive=True)()

            deadline = loop.time() + 20
            while (response := (await get(live, client))[0]).status_code != 200:
                assert loop.time() < deadline, f"still {response.status_code} after the database came back"
                await asyncio.sleep(0.2)
            await hang_up(stream)
            assert (await get(live, client))[0].json()["live_streams"] == 0
        assert "Service Unavailable: /healthz" not in live.log.read_text()  # a 503 is no error line per check
