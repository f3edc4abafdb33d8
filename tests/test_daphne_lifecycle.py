"""Streams end cleanly when daphne shuts down, and are reaped when it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from mediastream.simulator import TwilioStream
from voicecall.models import CallEvent, MediaStream

from .live import ROOT, Live
from .streams import open_call, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def open_stream(live: Live) -> TwilioStream:
    _call, stream = await open_call(live)
    return stream


async def test_server_shutdown_closes_and_records_the_stream(daphne):
    # Right after the webhook and the upgrade, daphne still lists connections
    # without an application: unpatched, its shutdown would cancel nothing
    # (see mediastream/daphne_shutdown.py).
    with daphne.start() as live:
        stream = await open_stream(live)
        live.proc.send_signal(signal.SIGTERM)
        await stream.wait_closed(15)
        live.proc.wait(15)
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is not None
    assert row.close_reason == "Server shutting down"


async def test_streams_of_a_killed_process_are_reaped(daphne):
    with daphne.start() as live:
        stream = await open_stream(live)
        live.proc.kill()  # no teardown runs
        live.proc.wait(10)
        await stream.wait_closed(10)
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is None  # stuck "live" until reaped
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": live.database_url, "TEST_DATABASE_NAME": ""}
    result = subprocess.run(
        [sys.executable, "manage.py", "reap_streams", "--local"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert stream.stream_sid in result.stdout
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is not None and row.close_reason == "reaped: owner process gone"
    assert await CallEvent.objects.filter(stream=row, type="stream.reaped").aexists()


async def test_a_new_process_reaps_on_its_first_stream(daphne):
    with daphne.start(name="daphne-killed") as live:
        orphan = await open_stream(live)
        live.proc.kill()
        live.proc.wait(10)
    with daphne.start(name="daphne-next") as live:
        await open_stream(live)
        row = await wait_for(
            lambda: MediaStream.objects.filter(stream_sid=orphan.stream_sid, stopped_at__isnull=False).first(), timeout=15
        )
    assert row.close_reason == "reaped: owner process gone"


async def test_a_live_process_reaps_a_killed_neighbours_streams_without_cron(daphne):
    # Each heartbeat of a process with live streams also reaps dead processes' streams.
    overrides = {"STREAM_HEARTBEAT_SECONDS": 0.5, "STALE_STREAM_SECONDS": 5}
    with daphne.start(overrides, name="daphne-survivor") as survivor:
        await open_stream(survivor)  # its first-stream reap has run: the orphan below does not exist yet
        with daphne.start(overrides, name="daphne-killed") as doomed:
            orphan = await open_stream(doomed)
            doomed.proc.kill()
            doomed.proc.wait(10)
        row = await wait_for(
            lambda: MediaStream.objects.filter(stream_sid=orphan.stream_sid, stopped_at__isnull=False).first(), timeout=10
        )
    assert row.close_reason == "reaped: owner process gone"


async def test_shutdown_during_teardown_still_records_the_stop(daphne):
    with daphne.start() as live:
        stream = await open_stream(live)
        await stream.stop()
        await stream.wait_closed(10)
        live.proc.send_signal(signal.SIGTERM)  # while the server may still be tearing the stream down
        live.proc.wait(15)
    row = await MediaStream.objects.aget(stream_sid=stream.stream_sid)
    assert row.stopped_at is not None
    assert row.close_reason == "Stream stopped"


async def test_a_serving_process_warms_its_speech_backends_up_before_any_call(daphne, tmp_path):
    marker = tmp_path / "warmed"
    tts = {"BACKEND": "tests.warm_marker.MarkedWarmUpBackend", "OPTIONS": {"MARKER": str(marker), "SAMPLE_RATE": 8000}}
    with daphne.start({"TTS": tts}, name="daphne-warm"):  # listening, and no call comes in
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not marker.exists():
            assert loop.time() < deadline, "the backends were not warmed up within 15 s of the server listening"
            await asyncio.sleep(0.05)
