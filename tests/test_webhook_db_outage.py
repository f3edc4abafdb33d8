"""A webhook the database cannot serve answers 503 with Retry-After, never a 500, on a real daphne.

Twilio retries a webhook that got a 5xx (or fails over to the number's
fallback URL), so 503 is the honest answer when the database cannot give a
connection in time; the answer must change nothing, so Twilio's retry is
processed like a first request. Two real causes: psycopg's pool exhausted
(a pool of one session, held by a request the test keeps waiting on a table
lock), and the test's own database refusing connections
(``tests.faults.blocked_database``; never the shared server's other databases).
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from mediastream.simulator import TwilioCall
from voicecall.models import Call, WebhookReceipt
from voicecall.outage import OutageLog

from .faults import blocked_database
from .streams import PUBLIC, auth_token, wait_for

on_a_server = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

#: One pooled session per process, given up on after half a second.
ONE_SESSION = {"DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "1", "DB_POOL_TIMEOUT": "0.5"}


def new_call(live) -> TwilioCall:
    return TwilioCall(server_url=live.http, public_url=PUBLIC, auth_token=auth_token())


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.text == "Service Unavailable: database unavailable"


def lock_waiters(database_url: str) -> int:
    """Sessions of the test database waiting for a lock."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()[0]


def assert_clean_log(live) -> str:
    log = live.log.read_text(errors="replace")
    assert "Traceback" not in log and "Internal Server Error" not in log
    assert "Service Unavailable: /twilio/" not in log  # django.request's line per 5xx: the outage log is the only one
    return log


@on_a_server[0]
@on_a_server[1]
async def test_an_exhausted_pool_answers_503_with_retry_after_and_the_retry_is_served(daphne):
    async with daphne.astart(name="one-session", env=ONE_SESSION) as live:
        held, waiting = new_call(live), new_call(live)
        await held.answer()  # the pool's one session is open and works
        with psycopg.connect(live.database_url) as locker:
            locker.execute("LOCK TABLE voicecall_webhookreceipt IN ACCESS EXCLUSIVE MODE")
            # This webhook takes the pool's only session and waits on the lock with it.
            holder = asyncio.create_task(held.status("in-progress"))
            await wait_for(lambda: lock_waiters(live.database_url) == 1, timeout=10)

            first = await waiting.post("/twilio/voice/", waiting.base_params("ringing"))
            assert_unavailable(first)
            assert_unavailable(await waiting.status("ringing"))
            assert not holder.done()
            locker.rollback()  # the lock goes; the held webhook finishes
        assert (await asyncio.wait_for(holder, 10)).status_code == 200

        # Twilio's retry is served: the 503 wrote no receipt, so it is no replay of one.
        retried = await waiting.answer()
        assert retried.url == "wss://voice.example.com/twilio/media-stream/"
        assert await Call.objects.filter(call_sid=waiting.call_sid).aexists()
        assert await WebhookReceipt.objects.filter(status_code=503).acount() == 0

        log = assert_clean_log(live)
        assert log.count("Database unavailable for Twilio webhook") == 1  # two 503s, one line
        assert "PoolTimeout" in log
        assert "Database available again for Twilio webhooks" in log


@on_a_server[0]
@on_a_server[1]
async def test_a_blocked_database_answers_503_with_retry_after_until_it_is_back(daphne):
    async with daphne.astart(name="blocked-db", env={"DB_POOL_TIMEOUT": "0.5"}) as live:
        call = new_call(live)
        await call.answer()
        loop = asyncio.get_running_loop()
        with blocked_database():
            for _ in range(3):
                started = loop.time()
                assert_unavailable(await call.status("in-progress"))
                assert loop.time() - started < 5  # the pool's timeout, not Twilio's 15 s
        deadline = loop.time() + 20
        while (response := await call.status("in-progress")).status_code != 200:
            assert response.status_code == 503, response.text
            assert loop.time() < deadline, "webhooks still failing after the database came back"
            await asyncio.sleep(0.2)
        log = assert_clean_log(live)
        assert log.count("Database unavailable for Twilio webhook") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_logs_a_line_per_interval_and_one_when_it_ends(rf, caplog):
    import logging

    clock = Clock()
    log = OutageLog(logging.getLogger("tests.outage"), interval=10.0, clock=clock)
    request, error = rf.post("/twilio/voice/"), psycopg.OperationalError("pool timed out")
    with caplog.at_level(logging.WARNING, logger="tests.outage"):
        for _ in range(50):
            log.failed(request, error)
            clock.now += 0.3  # 15 s of failures: the first line, then one with the count at 10 s
        log.passed()
        log.passed()  # no outage any more: no line
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("Database unavailable for Twilio webhook /twilio/voice/ (OperationalError: pool timed out)")
    assert lines[1] == "33 more Twilio webhooks answered 503 (database unavailable) in the last 10s"
    assert lines[2].startswith("Database unavailable for Twilio webhook")
    assert lines[3] == "Database available again for Twilio webhooks after 15.0s (15 more answered 503 since the last line)"


def _wrapped(cause: BaseException, django_class=None):
    """What Django raises for a driver error: its own class, from the driver's exception."""
    from django.db import OperationalError

    try:
        raise (django_class or OperationalError)(*cause.args) from cause
    except Exception as error:
        return error


def test_only_errors_that_say_the_database_is_away_count_as_an_outage(tmp_path):
    """A pool timeout, a server shutting down or refusing connections: 503. A missing table or a statement
    timeout is a bug or a slow query, not an outage: it stays a 500 with its traceback."""
    import sqlite3

    import psycopg
    from django.db import InterfaceError
    from psycopg_pool import PoolTimeout

    from voicecall.outage import is_outage

    assert is_outage(_wrapped(PoolTimeout("couldn't get a connection after 0.50 sec")))
    assert is_outage(_wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")))
    assert is_outage(_wrapped(psycopg.errors.TooManyConnections("too many clients already")))
    assert is_outage(_wrapped(psycopg.OperationalError("connection failed: Connection refused")))
    assert is_outage(_wrapped(psycopg.InterfaceError("the connection is closed"), InterfaceError))
    assert not is_outage(_wrapped(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")))
    try:
        sqlite3.connect(":memory:").execute("SELECT * FROM voicecall_call")
    except sqlite3.OperationalError as missing_table:
        assert not is_outage(_wrapped(missing_table))
    path = str(tmp_path / "locked.sqlite3")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        sqlite3.connect(path, timeout=0).execute("SELECT 1 FROM sqlite_master")
    except sqlite3.OperationalError as locked:
        assert is_outage(_wrapped(locked))
    else:
        raise AssertionError("the exclusive lock did not block the reader")
    finally:
        holder.close()
