"""Media streams against hostile frames and starts, through the consumer and PostgreSQL.

Deep JSON and unstorable text are bad frames like any other; a stream token
opens one stream; wrong tokens neither lock the call nor grow its event log.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.test import Client
from twilio.request_validator import RequestValidator

from mediastream.admission import registry
from mediastream.closing import CLOSES
from mediastream.simulator import new_sid
from voicecall.models import Call, CallEvent, CallStatus, MediaStream
from voicecall.records import lock_call

from . import streams
from .streams import communicator, live_stream, make_call, receive_close, wait_for
from .support import mediastream_settings as ms

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _registry_released():
    yield
    assert registry.open_count == 0, "a socket was not released"
    assert registry.pending_count == 0


async def expect_close(comm, close) -> None:
    output = await receive_close(comm)
    assert (output["code"], output.get("reason")) == (close.code, close.reason), output


def start_with(call_sid: str, stream_sid: str, token: str, *, media_format=None, raw: str | None = None, **params) -> str:
    """A start frame; ``media_format`` replaces Twilio's, ``raw`` is spliced in as mediaFormat's JSON text."""
    frame = json.loads(streams.start(call_sid, stream_sid, token, **params))
    if media_format is not None:
        frame["start"]["mediaFormat"] = media_format
    text = json.dumps(frame)  # ensure_ascii: a lone surrogate travels as the escape "\ud800"
    if raw is not None:
        text = text.replace('"mediaFormat": {}', f'"mediaFormat": {raw}')
    return text


# --- deeply nested JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["[" * 30000, '{"a":' * 12000, "[" * 3000 + "]" * 3000])
async def test_deep_nesting_before_start_is_a_malformed_frame(frame):
    assert len(frame) < 64 * 1024
    call, token = await make_call()
    comm = communicator()
    assert (await comm.connect())[0]
    await comm.send_to(text_data=frame)
    stream_sid = new_sid("MZ")
    await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
    await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid))
    await expect_close(comm, CLOSES.STOPPED)
    await comm.disconnect()
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stats["protocol_errors"] == {"malformed": 1}


async def test_deep_nesting_on_a_live_stream_keeps_it_streaming():
    async with live_stream() as (comm, call, stream_sid):
        await comm.send_to(text_data="[" * 30000)
        await comm.send_to(bytes_data=b"[" * 30000)
        await comm.send_to(text_data=streams.media(stream_sid, seq=2))
        await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid, seq=3))
        await expect_close(comm, CLOSES.STOPPED)
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.close_code == CLOSES.STOPPED.code
    assert stream.stats["protocol_errors"] == {"malformed": 2}
    assert stream.stats["media_frames"] == 1


# --- what a start carries into PostgreSQL ---------------------------------------------------------


BAD_STARTS = {
    "nul in mediaFormat": {"media_format": {"encoding": "audio/x-mulaw\x00", "sampleRate": 8000}},
    "lone surrogate in mediaFormat": {"media_format": {"encoding": "\ud800"}},
    "nul in a mediaFormat key": {"media_format": {"enc\x00oding": "audio/x-mulaw"}},
    "NaN in mediaFormat": {"media_format": {}, "raw": '{"sampleRate": NaN}'},
    "Infinity in mediaFormat": {"media_format": {}, "raw": '{"sampleRate": -Infinity}'},
    "deep mediaFormat": {"media_format": {}, "raw": '{"a":' * 50 + "1" + "}" * 50},
    "nul in a parameter": {"FirstName": "Ja\x00ne"},
    "lone surrogate in a parameter": {"FirstName": "\udfff"},
    "lone surrogate in a parameter name": {"\ud83d": "x"},
}


@pytest.mark.parametrize("case", sorted(BAD_STARTS))
async def test_unstorable_start_is_an_invalid_frame_and_a_valid_start_still_gets_in(case):
    call, token = await make_call()
    comm = communicator()
    assert (await comm.connect())[0]
    bad_sid = new_sid("MZ")
    await comm.send_to(text_data=start_with(call.call_sid, bad_sid, token, **BAD_STARTS[case]))
    stream_sid = new_sid("MZ")
    await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
    await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid))
    await expect_close(comm, CLOSES.STOPPED)
    await comm.disconnect()
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stats["protocol_errors"] == {"invalid": 1}
    assert stream.media_format == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert not await MediaStream.objects.filter(stream_sid=bad_sid).aexists()


async def test_a_socket_with_only_an_unstorable_start_times_out_and_writes_nothing():
    with ms(PRE_START_TIMEOUT=0.2):
        call, token = await make_call()
        comm = communicator()
        assert (await comm.connect())[0]
        await comm.send_to(text_data=start_with(call.call_sid, new_sid("MZ"), token, FirstName="\x00"))
        await expect_close(comm, CLOSES.START_TIMEOUT)
        await comm.disconnect()
    assert not await MediaStream.objects.filter(call=call).aexists()
    assert (await Call.objects.aget(pk=call.pk)).status == CallStatus.RINGING


# --- a token opens one stream ---------------------------------------------------------------------


def _voice_webhook(call_sid: str) -> str:
    """The signed voice webhook for ``call_sid``; returns the token in its TwiML."""
    import xml.etree.ElementTree as ET

    params = {"CallSid": call_sid, "CallStatus": "in-progress", "AccountSid": "AC" + "0" * 32}
    url = streams.PUBLIC + "/twilio/voice/"
    signature = RequestValidator(streams.auth_token()).compute_signature(url, params)
    response = Client().post("/twilio/voice/", params, HTTP_X_TWILIO_SIGNATURE=signature)
    connections.close_all()
    (param,) = ET.fromstring(response.content).findall("./Connect/Stream/Parameter")
    return param.get("value")


async def test_a_token_is_spent_by_its_stream_until_the_voice_webhook_mints_a_new_one():
    call, token = await make_call()
    first = communicator()
    assert (await first.connect())[0]
    first_sid = new_sid("MZ")
    await first.send_to(text_data=streams.start(call.call_sid, first_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=first_sid).exists())
    await first.send_to(text_data=streams.stop(call.call_sid, first_sid))
    await expect_close(first, CLOSES.STOPPED)
    await first.disconnect()
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=first_sid, stopped_at__isnull=False).exists())

    again = communicator()
    assert (await again.connect())[0]
    await again.send_to(text_data=streams.start(call.call_sid, new_sid("MZ"), token))
    await expect_close(again, CLOSES.INVALID_TOKEN)
    await again.disconnect()

    fresh = await sync_to_async(_voice_webhook)(call.call_sid)
    async with _started(call.call_sid, fresh) as stream_sid:
        assert await MediaStream.objects.filter(stream_sid=stream_sid, stopped_at__isnull=True).aexists()
    assert await MediaStream.objects.filter(call=call).acount() == 2


async def test_a_second_socket_with_the_token_of_a_live_stream_is_refused_invalid_token():
    call, token = await make_call()
    async with _started(call.call_sid, token):
        second = communicator(client="198.51.100.3")
        assert (await second.connect())[0]
        await second.send_to(text_data=streams.start(call.call_sid, new_sid("MZ"), token))
        await expect_close(second, CLOSES.INVALID_TOKEN)
        await second.disconnect()
    assert await MediaStream.objects.filter(call=call).acount() == 1


class _started:
    """An admitted stream for ``call_sid`` with ``token``, hung up on exit."""

    def __init__(self, call_sid: str, token: str) -> None:
        self.call_sid, self.token, self.comm = call_sid, token, communicator()

    async def __aenter__(self) -> str:
        assert (await self.comm.connect())[0]
        stream_sid = new_sid("MZ")
        await self.comm.send_to(text_data=streams.start(self.call_sid, stream_sid, self.token))
        await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
        return stream_sid

    async def __aexit__(self, *exc) -> None:
        await self.comm.disconnect()


# --- wrong tokens: no lock, no flood of rows --------------------------------------------------------


class _RowLock:
    """Hold the call's row lock from another connection, as a webhook does (one in a long transaction)."""

    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.locked, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        try:
            with transaction.atomic():
                lock_call(self.call_sid, {})
                self.locked.set()
                self.release.wait(15)
        finally:
            connections.close_all()

    def __enter__(self):
        self.thread.start()
        assert self.locked.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(10)


async def test_a_wrong_token_is_refused_while_the_call_row_is_locked():
    call, _token = await make_call()
    with _RowLock(call.call_sid):
        comm = communicator()
        assert (await comm.connect())[0]
        await comm.send_to(text_data=streams.start(call.call_sid, new_sid("MZ"), "not-the-token"))
        output = await receive_close(comm, timeout=3)
        await comm.disconnect()
    assert (output["code"], output["reason"]) == (CLOSES.INVALID_TOKEN.code, CLOSES.INVALID_TOKEN.reason)


async def test_a_flood_of_wrong_tokens_writes_at_most_one_row_per_second():
    call, token = await make_call()
    began = time.monotonic()
    for i in range(40):
        comm = communicator(client=f"198.51.100.{i + 1}")
        assert (await comm.connect())[0]
        await comm.send_to(text_data=streams.start(call.call_sid, new_sid("MZ"), f"wrong-{i}"))
        await expect_close(comm, CLOSES.INVALID_TOKEN)
        await comm.disconnect()
    seconds = time.monotonic() - began
    rows = await CallEvent.objects.filter(call=call, type="stream.rejected").acount()
    assert 1 <= rows <= int(seconds) + 1, (rows, seconds)
    async with _started(call.call_sid, token):  # the right token still gets in
        pass


async def test_concurrent_wrong_tokens_write_one_row():
    from mediastream import db

    call, _token = await make_call()
    barrier = threading.Barrier(8)
    outcomes = []

    def attempt(i: int) -> None:
        try:
            barrier.wait(5)
            outcomes.append(
                db.admit_stream(
                    call_sid=call.call_sid,
                    stream_sid=new_sid("MZ"),
                    token=f"wrong-{i}",
                    tracks=["inbound"],
                    media_format={},
                    custom_parameters={},
                    stale_after=120,
                )
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    await asyncio.gather(*(asyncio.to_thread(thread.join, 10) for thread in threads))
    seconds = time.monotonic() - began
    assert outcomes == [CLOSES.INVALID_TOKEN] * 8
    rows = await CallEvent.objects.filter(call=call, type="stream.rejected").acount()
    assert 1 <= rows <= int(seconds) + 1, (rows, seconds)
