"""A server that starts with its database or Redis unreachable says so in one line each, and calls go on.

Real daphne processes pointed at ports where nothing listens. The lines come
from ``mediastream.preflight`` as daphne starts serving; no traceback, and
with Redis away a call still streams from start to hang-up.
"""

from __future__ import annotations

import time

import pytest

from .live import daphne_server, free_port
from .streams import hang_up, open_call


def wait_for_text(log, *texts: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if all(text in content for text in texts):
            return content
        time.sleep(0.05)
    raise AssertionError(f"{texts} not all in the log:\n{log.read_text(errors='replace')[-3000:]}")


def test_unreachable_database_and_redis_are_one_line_each(tmp_path):
    database = f"postgres://postgres@127.0.0.1:{free_port()}/voice"
    redis = f"redis://127.0.0.1:{free_port()}/0"
    log = tmp_path / "daphne.log"
    with daphne_server(database_url=database, redis_url=redis, prefix="preflight", log_path=log):
        content = wait_for_text(log, "Cannot reach the postgresql database voice", f"Cannot reach Redis at {redis}")
    lines = content.splitlines()
    [db_line] = [line for line in lines if "Cannot reach the postgresql database" in line]
    [redis_line] = [line for line in lines if "Cannot reach Redis" in line]
    assert "ERROR mediastream.preflight" in db_line and "DATABASES" in db_line
    assert "ERROR mediastream.preflight" in redis_line and "CHANNEL_LAYERS" in redis_line
    assert "Traceback" not in content
    assert "psycopg.pool" not in content  # the probe starts no pool that would retry (and log) on its own


@pytest.mark.django_db(transaction=True)
def test_a_healthy_server_says_its_checks_passed(daphne):
    with daphne.start(name="preflight-ok") as live:
        content = wait_for_text(live.log, "Startup checks passed")
    assert "Cannot reach" not in content


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_with_redis_away_from_the_start_the_first_call_streams(daphne):
    redis = f"redis://127.0.0.1:{free_port()}/0"
    async with daphne.astart(name="redis-away", redis_url=redis) as live:
        _call, stream = await open_call(live)
        await stream.stream_audio(b"\xff" * 1600, realtime=False)
        row = await hang_up(stream)
    content = live.log.read_text(errors="replace")
    assert row.stopped_at is not None and row.close_code == 1000
    assert "consumer crashed" not in content and "Traceback" not in content
    assert content.count("Cannot reach Redis") == 1
