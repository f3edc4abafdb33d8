"""Streams end cleanly when daphne shuts down, and are reaped when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from mediastream.simulator import TwilioCall, TwilioStream
from voicecall.models import CallEvent, MediaStream

from .live import ROOT, daphne_server
from .streams import wait_for
from .test_daphne import PUBLIC, database_url

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(django_db_blocker):
    from tests.settings import TEST_REDIS_URL

    with django_db_blocker.unblock():
        url = database_url()

    def start():
        return daphne_server(
            database_url=url, redis_url=TEST_REDIS_URL, prefix=f"mslife{os.getpid()}",
            log_path=Path(os.environ["DAPHNE_LOG"]) if os.environ.get("DAPHNE_LOG") else None,
        )

    return start, url


async def open_stream(port: int) -> TwilioStream:
    call = TwilioCall(server_url=f"http://127.0.0.1:{port}", public_url=PUBLIC, auth_token=settings.TWILIO_AUTH_TOKEN)
    instructions = await call.answer()
    stream = TwilioStream(
        f"ws://127.0.0.1:{port}/twilio/media-stream/", signed_url=instructions.url, auth_token=call.auth_token,
        call_sid=call.call_sid, parameters=instructions.parameters,
    )
    await stream.connect()
    await stream.start()
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid).exists())
    return stream


async def test_server_shutdown_closes_and_records_the_stream(server):
    # Right after the webhook and the upgrade, daphne still lists connections
    # without an application: unpatched, its shutdown would cancel nothing
    # (see mediastream/daphne_shutdown.py).
    start, _ = server
    with start() as (port, proc):
        stream = await open_stream(port)
        proc.send_signal(signal.SIGTERM)
        await stream.wait_closed(15)
        proc.wait(15)
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is not None
    assert row.close_reason == "Server shutting down"


async def test_streams_of_a_killed_process_are_reaped(server):
    start, url = server
    with start() as (port, proc):
        stream = await open_stream(port)
        proc.kill()  # no teardown runs
        proc.wait(10)
        await stream.wait_closed(10)
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is None  # stuck "live" until reaped
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": url, "TEST_DATABASE_NAME": ""}
    result = subprocess.run(
        [sys.executable, "manage.py", "reap_streams", "--local"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert stream.stream_sid in result.stdout
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is not None and row.close_reason == "reaped: owner process gone"
    assert await CallEvent.objects.filter(stream=row, type="stream.reaped").aexists()


async def test_a_new_process_reaps_on_its_first_stream(server):
    start, _ = server
    with start() as (port, proc):
        orphan = await open_stream(port)
        proc.kill()
        proc.wait(10)
    with start() as (port, proc):
        await open_stream(port)
        row = await wait_for(
            lambda: MediaStream.objects.filter(stream_sid=orphan.stream_sid, stopped_at__isnull=False).first(), timeout=15
        )
    assert row.close_reason == "reaped: owner process gone"


async def test_shutdown_during_teardown_still_records_the_stop(server):
    start, _ = server
    with start() as (port, proc):
        stream = await open_stream(port)
        await stream.stop()
        await stream.wait_closed(10)
        proc.send_signal(signal.SIGTERM)  # while the server may still be tearing the stream down
        proc.wait(15)
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is not None
    assert row.close_reason == "Stream stopped"
