"""A database outage loses no event and crashes no stream.

The test's own database is blocked for real (``tests.faults.blocked_database``:
``ALLOW_CONNECTIONS false`` and its sessions terminated, never the shared
server's other databases). While it is away, a live stream's events still
reach signal receivers and the events group, in order; their rows, and the
stream's end, are written in order when it is back; a ``start`` gets 4013
"Database unavailable" and gives its admission slot back; other calls go on
streaming. A stalled channel layer does not hold events up either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from contextlib import asynccontextmanager

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.db import connection
from django.test import override_settings

from mediastream import session as s
from mediastream.api import aspeak
from mediastream import signals
from mediastream.admission import AdmissionRegistry, registry
from mediastream.backends import backends
from mediastream.closing import CLOSES
from mediastream.dbgate import database
from mediastream.groups import events_group
from mediastream.simulator import TwilioCall, TwilioStream, new_sid
from voicecall.models import CallEvent, MediaStream, TranscriptSegment

from . import streams
from .faults import blocked_database, private_redis
from .live import CONSTANT_TTS
from .streams import PUBLIC, communicator, hang_up, live_stream, make_call, open_call, receive_close, wait_for
from .support import mediastream_settings

LOCMEM_STT = {"BACKEND": "mediastream.transcription.locmem.LocmemBackend", "OPTIONS": {}}
#: About 12 s of agent speech with the constant TTS: it plays through the outage.
LONG_LINE = "This line keeps playing while the database is away. " * 5


def dtmf(stream_sid: str, digit: str, seq: int) -> str:
    return json.dumps(
        {"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": str(seq), "dtmf": {"track": "inbound_track", "digit": digit}}
    )


class Receivers:
    """Signal receivers that keep what they heard, in order, and let the test wait for a count."""

    def __init__(self, *signals_) -> None:
        self.heard: list[tuple[str, dict]] = []
        self._signals = signals_
        self._changed = asyncio.Event()

    def __enter__(self) -> Receivers:
        for sig in self._signals:
            sig.connect(self._receive)
        return self

    def __exit__(self, *exc) -> None:
        for sig in self._signals:
            sig.disconnect(self._receive)

    def _receive(self, sender, signal, **kwargs) -> None:
        self.heard.append((next(name for name, obj in vars(signals).items() if obj is signal), kwargs))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
        async with asyncio.timeout(timeout):
            while len(self.heard) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.heard


@asynccontextmanager
async def opened_stream():
    """``live_stream`` once its parts are up (``stream_started`` was sent): from then on the database may go."""
    with Receivers(signals.stream_started) as started:
        async with live_stream() as (comm, call, stream_sid):
            await started.wait_for(1)
            yield comm, call, stream_sid


async def group_events(layer, channel: str, count: int, *, kinds: tuple[str, ...], timeout: float = 10.0) -> list[dict]:
    """The next ``count`` messages of those ``kinds`` on an events-group listener channel."""
    messages: list[dict] = []
    async with asyncio.timeout(timeout):
        while len(messages) < count:
            message = await layer.receive(channel)
            if message["event"] in kinds:
                messages.append(message)
    return messages


def event_rows(stream_sid: str) -> list[tuple[str, dict]]:
    rows = CallEvent.objects.filter(stream__stream_sid=stream_sid).order_by("id")
    return [(row.type, row.payload) for row in rows]


@pytest.fixture(autouse=True)
def _released():
    yield
    # This thread may hold a session the outage ended (pytest-django flushes the tables with it next).
    if connection.connection is not None and not connection.is_usable():
        connection.close()
    assert registry.open_count == 0, "a socket was not released"
    assert registry.pending_count == 0


def db_test(test):
    """An async test on the real test database (rows are committed: the server and the stream threads see them)."""
    return pytest.mark.asyncio(pytest.mark.django_db(transaction=True)(test))


# --- in process: signals, the events group, rows -------------------------------------------


@db_test
async def test_events_reach_receivers_and_the_events_group_during_an_outage_and_their_rows_follow():
    with mediastream_settings(TRANSCRIPTION=LOCMEM_STT), Receivers(signals.dtmf_received, signals.transcript_final) as heard:
        async with opened_stream() as (comm, call, stream_sid):
            layer = get_channel_layer()
            listener = await layer.new_channel()
            await layer.group_add(events_group(call.call_sid), listener)
            transcription = await _session_of(stream_sid)
            with blocked_database():
                await comm.send_to(text_data=dtmf(stream_sid, "1", 2))
                await heard.wait_for(1)  # the frame went through the consumer before the backend speaks
                transcription.emit_final("I would like to book a table", start_ms=100, end_ms=900)
                await comm.send_to(text_data=dtmf(stream_sid, "2", 3))
                assert [(name, data.get("digit") or data.get("text")) for name, data in await heard.wait_for(3)] == [
                    ("dtmf_received", "1"),
                    ("transcript_final", "I would like to book a table"),
                    ("dtmf_received", "2"),
                ]
                broadcast = await group_events(layer, listener, 3, kinds=("dtmf", "transcript.final"))
                assert [(m["event"], m["data"].get("digit") or m["data"].get("text")) for m in broadcast] == [
                    ("dtmf", "1"),
                    ("transcript.final", "I would like to book a table"),
                    ("dtmf", "2"),
                ]
            # The database is back: the rows are written, in the order of the events.
            assert await database.wait_up(10)
            expected = [("dtmf", {"digit": "1"}), ("transcript.final", None), ("dtmf", {"digit": "2"})]
            rows = await wait_for(lambda: _recorded(stream_sid, 3, ("dtmf", "transcript.final")), timeout=15)
            assert [(kind, payload if kind == "dtmf" else None) for kind, payload in rows] == expected
            segment = await TranscriptSegment.objects.aget(stream__stream_sid=stream_sid, speaker="caller")
            assert segment.text == "I would like to book a table" and (segment.start_ms, segment.end_ms) == (100, 900)


@db_test
async def test_a_start_during_an_outage_is_closed_4013_and_gives_its_slot_back(caplog):
    call, token = await make_call()
    stream_sid = new_sid("MZ")
    with blocked_database(), caplog.at_level(logging.INFO):
        comm = communicator()
        assert (await comm.connect())[0]
        await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
        closed = await receive_close(comm, timeout=15)
        await comm.disconnect()
    assert (closed["code"], closed["reason"]) == (4013, "Database unavailable")
    assert registry.open_count == 0 and registry.pending_count == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "no traceback, no error"
    closes = [r for r in caplog.records if "4013 Database unavailable" in r.getMessage()]
    assert len(closes) == 1, [r.getMessage() for r in caplog.records]
    # Nothing was written and the token is unspent: once the database is back, the same start is admitted.
    assert await database.wait_up(10)
    async with live_stream_for(call, token) as sid:
        assert await MediaStream.objects.filter(stream_sid=sid, stopped_at__isnull=True).aexists()


@db_test
async def test_a_stream_that_ends_during_the_outage_is_recorded_when_the_database_returns():
    async with opened_stream() as (comm, call, stream_sid):
        with blocked_database():
            await comm.send_to(text_data=dtmf(stream_sid, "9", 2))
            await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid))
            closed = await receive_close(comm, timeout=10)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await comm.disconnect(timeout=10)
            teardown = loop.time() - started
    assert closed["code"] == 1000
    assert await database.wait_up(10)
    assert teardown < 6, f"teardown waited {teardown:.1f}s for the database"
    row = await wait_for(
        lambda: MediaStream.objects.filter(stream_sid=stream_sid, stopped_at__isnull=False).first(), timeout=15
    )
    assert (row.close_code, row.close_reason) == (1000, CLOSES.STOPPED.reason)
    kinds = [kind for kind, _ in await database_sync_to_async(event_rows)(stream_sid)]
    assert [kind for kind in kinds if kind in ("stream.started", "dtmf", "stream.stopped")] == [
        "stream.started",
        "dtmf",
        "stream.stopped",
    ]


@db_test
async def test_rows_past_the_backlog_are_logged_as_lost_in_one_line():
    with mediastream_settings(DATABASE_BACKLOG_ROWS=2), Receivers(signals.dtmf_received) as heard:
        async with opened_stream() as (comm, call, stream_sid), LogLines("mediastream.rows") as log:
            with blocked_database():
                for seq, digit in enumerate("12345", start=2):
                    await comm.send_to(text_data=dtmf(stream_sid, digit, seq))
                assert [data["digit"] for _, data in await heard.wait_for(5)] == list("12345")  # every event delivered
            assert await database.wait_up(10)
            lost = await log.wait_for("row(s) lost")  # said once the database answers again
            # The backlog kept the oldest rows (at most 2; a row the stream owed from before may be one).
            kept = [payload["digit"] for _, payload in await database_sync_to_async(event_rows)(stream_sid) if "digit" in payload]
    assert 1 <= len(kept) <= 2 and kept == list("12345")[: len(kept)]
    assert len(lost) == 1, lost
    first_lost = str(len(kept) + 1)
    assert f"Stream {stream_sid}: {5 - len(kept)} row(s) lost, 2 rows already waiting for the database: " in lost[0]
    assert lost[0].split(": ", 2)[2].startswith(f"dtmf {{'digit': '{first_lost}'}}"), lost[0]


@db_test
async def test_rows_of_a_stream_whose_outage_outlasts_the_grace_are_logged_as_lost():
    with mediastream_settings(DATABASE_BACKLOG_SECONDS=1.0), Receivers(signals.dtmf_received) as heard:
        async with opened_stream() as (comm, call, stream_sid):
            with blocked_database(), LogLines("mediastream.rows") as log:
                await comm.send_to(text_data=dtmf(stream_sid, "4", 2))
                await heard.wait_for(1)
                await comm.disconnect(timeout=10)
                lost = await log.wait_for("row(s) lost")
    assert len(lost) == 1, lost
    assert f"row(s) lost, the database was unavailable for 1s after the stream ended: " in lost[0]
    assert "dtmf {'digit': '4'}" in lost[0] and "stream end (1000 socket closed)" in lost[0]
    assert await database.wait_up(10)


@db_test
async def test_a_stalled_channel_layer_does_not_hold_events_up():
    """Redis stops answering (SIGSTOP): signals keep coming, in order, while broadcasts are skipped."""
    with private_redis() as redis, Receivers(signals.dtmf_received) as heard:
        layers = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": redis.url, "socket_timeout": None}], "prefix": "dbout"},
            }
        }
        with override_settings(CHANNEL_LAYERS=layers):
            channel_layers.backends.clear()
            async with opened_stream() as (comm, call, stream_sid):
                os.kill(redis.proc.pid, signal.SIGSTOP)
                try:
                    for seq, digit in enumerate("123", start=2):
                        await comm.send_to(text_data=dtmf(stream_sid, digit, seq))
                    assert [data["digit"] for _, data in await heard.wait_for(3, timeout=8)] == ["1", "2", "3"]
                finally:
                    os.kill(redis.proc.pid, signal.SIGCONT)
            channel_layers.backends.clear()
    assert [kind for kind, _ in await database_sync_to_async(event_rows)(stream_sid)].count("dtmf") == 3


def test_a_database_error_at_admission_closes_4013_and_releases_the_slot():
    """Pure: the session's answer to a failed admission."""
    from django.db import OperationalError

    from .test_session import CALL, STREAM, scope

    admission = AdmissionRegistry()
    session = s.StreamSession("conn-db", admission, s.SessionConfig())
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok"))
    assert admission.pending_count == 0 and admission.open_count == 1  # it sent start: no longer pending
    assert session.admission_failed(OperationalError("connection refused")) == [s.CloseSocket(CLOSES.DATABASE_UNAVAILABLE)]
    assert session.admitted is None
    assert session.disconnected(None) == [s.Teardown(4013, "Database unavailable")]
    session.teardown()
    assert admission.pending_count == 0 and admission.open_count == 0


# --- a real daphne: calls go on, starts get 4013 ----------------------------------------------


@db_test
async def test_live_calls_go_on_through_a_database_outage(daphne):
    overrides = {"TTS": CONSTANT_TTS, "MAX_PENDING_CONNECTIONS_PER_IP": 1}
    async with daphne.astart(overrides, name="db-outage") as live:
        with override_settings(CHANNEL_LAYERS=live.channel_layers()):
            channel_layers.backends.clear()
            calls = [await open_call(live) for _ in range(3)]
            for call, _ in calls:
                await aspeak(call.call_sid, LONG_LINE)
            for _, stream in calls:
                await stream.next_event("media", timeout=10)
            layer = get_channel_layer()
            listener = await layer.new_channel()
            await layer.group_add(events_group(calls[0][0].call_sid), listener)
            late = TwilioCall(server_url=live.http, public_url=PUBLIC, auth_token=streams.auth_token())
            instructions = await late.answer()  # the voice webhook before the outage; its stream starts during it

            with blocked_database():
                audio_before = [len(stream.agent_audio) for _, stream in calls]
                first = calls[0][1]
                await first.send_dtmf("7")
                event = await _next_broadcast(layer, listener, "dtmf")
                assert event["data"] == {"digit": "7"}
                refused = TwilioStream(
                    live.ws, signed_url=instructions.url, auth_token=streams.auth_token(),
                    call_sid=late.call_sid, parameters=instructions.parameters,
                )  # fmt: skip
                await refused.connect()
                await refused.start()
                assert await refused.wait_closed(timeout=15) == 4013
                # A second of audio more for every call, and none was closed.
                await _until(lambda: all(len(st.agent_audio) > n + 8000 for (_, st), n in zip(calls, audio_before)))
                assert not [stream.close_code for _, stream in calls if stream.closed.is_set()]

            rows = await wait_for(lambda: _recorded(first.stream_sid, 1, ("dtmf",)), timeout=20)
            assert rows == [("dtmf", {"digit": "7"})]
            assert "4013 Database unavailable" in live.log.read_text()
            # Its admission slot was given back (one pending socket per address here): a new call gets in.
            _, again = await open_call(live, timeout=15)
            for _, stream in [*calls, (None, again)]:
                row = await hang_up(stream)
                assert row.close_reason == "socket closed"
            channel_layers.backends.clear()


# --- helpers ---------------------------------------------------------------------------------


def _recorded(stream_sid: str, count: int, kinds: tuple[str, ...]):
    """The stream's event rows of those ``kinds``, once there are ``count`` of them."""
    rows = [(kind, payload) for kind, payload in event_rows(stream_sid) if kind in kinds]
    return rows if len(rows) >= count else None


async def _session_of(stream_sid: str, timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        while True:
            for session in getattr(backends.transcription, "sessions", []):
                if session.stream_sid == stream_sid:
                    return session
            await asyncio.sleep(0.01)


async def _next_broadcast(layer, channel: str, name: str, timeout: float = 10.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = await layer.receive(channel)
            if message["event"] == name:
                return message


async def _until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class LogLines(logging.Handler):
    """The lines one logger writes while the block runs (pytest's caplog only sees the propagated ones)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.logger = logging.getLogger(name)
        self.lines: list[str] = []

    def __enter__(self) -> LogLines:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)

    async def __aenter__(self) -> LogLines:
        return self.__enter__()

    async def __aexit__(self, *exc) -> None:
        self.__exit__(*exc)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    async def wait_for(self, text: str, timeout: float = 10.0) -> list[str]:
        async with asyncio.timeout(timeout):
            while not (found := [line for line in self.lines if text in line]):
                await asyncio.sleep(0.02)
        return found


class live_stream_for:
    """An admitted stream for an existing call and token; yields its streamSid."""

    def __init__(self, call, token: str) -> None:
        self.call, self.token = call, token

    async def __aenter__(self) -> str:
        self.comm = communicator()
        assert (await self.comm.connect())[0]
        self.stream_sid = new_sid("MZ")
        await self.comm.send_to(text_data=streams.start(self.call.call_sid, self.stream_sid, self.token))
        await wait_for(lambda: MediaStream.objects.filter(stream_sid=self.stream_sid).exists(), timeout=10)
        return self.stream_sid

    async def __aexit__(self, *exc) -> None:
        await self.comm.disconnect()
