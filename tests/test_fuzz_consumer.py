"""Fuzzing the consumer: random frames on a live stream, through WebsocketCommunicator and PostgreSQL.

Whatever the frames, the socket stays up or closes with a code and reason from
``CLOSES``, the admission registry is released, and the rows agree with what
was sent: one stream, stopped with the socket's close code, started and
stopped once in the event log, and every bad frame counted by kind.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediastream.admission import registry
from mediastream.closing import CLOSES, Close
from mediastream.protocol import RemoteProtocolError, parse_message
from mediastream.simulator import new_sid
from voicecall.models import CallEvent, CallStatus, MediaStream

from . import fuzzing, streams
from .streams import communicator, make_call, receive_close, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_VALUES = {(c.code, c.reason) for c in vars(CLOSES).values() if isinstance(c, Close)}


def _media(seq: int) -> str:
    return streams.media("{sid}", seq=seq, timestamp=20 * seq)


# Text frames are valid UTF-8 on the wire (the server refuses any other), so no lone surrogate
# characters; their JSON escapes ("\ud800") come through fuzzing.frames.
consumer_frames = st.one_of(
    st.integers(2, 10**6).map(_media),
    st.integers(2, 10**6).map(_media),
    st.sampled_from(list("0123456789*#")).map(lambda d: json.dumps({"event": "dtmf", "streamSid": "{sid}", "dtmf": {"digit": d}})),
    st.text(max_size=12).map(lambda n: json.dumps({"event": "mark", "streamSid": "{sid}", "mark": {"name": n}})),
    fuzzing.frames.filter(lambda f: len(f) > 0 and (isinstance(f, bytes) or f.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") == f)),
)
OVERSIZE = b"\x00" * (MAX_MESSAGE_BYTES + 1)


def _expected_errors(frames: list[str | bytes]) -> Counter:
    """Bad frames by kind, as the session counts them (frames over the size limit are never parsed)."""
    kinds: Counter = Counter()
    for frame in frames:
        if len(frame) > MAX_MESSAGE_BYTES or (isinstance(frame, str) and len(frame.encode()) > MAX_MESSAGE_BYTES):
            continue
        try:
            parse_message(frame)
        except RemoteProtocolError as exc:
            kinds[exc.kind] += 1
    return kinds


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.lists(consumer_frames, min_size=40, max_size=80), st.none() | st.none() | st.integers(0, 80))
async def test_random_frames_on_a_live_stream_close_as_documented_and_leave_consistent_rows(frames, oversize_at):
    if oversize_at is not None:  # sometimes one frame over MAX_MESSAGE_BYTES somewhere
        frames = [*frames[:oversize_at], OVERSIZE, *frames[oversize_at:]]
    call, token = await make_call()
    stream_sid = new_sid("MZ")
    frames = [f.replace("{sid}", stream_sid) if isinstance(f, str) else f for f in frames]
    comm = communicator()
    assert (await comm.connect())[0]
    await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
    for frame in frames:
        if isinstance(frame, bytes):
            await comm.send_to(bytes_data=frame)
        else:
            await comm.send_to(text_data=frame)
    await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid, seq=10**7))
    close = await receive_close(comm, timeout=10)
    assert (close["code"], close.get("reason")) in CLOSE_VALUES, close
    await comm.disconnect()

    stream = await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid, stopped_at__isnull=False).first())
    assert stream.close_code == close["code"]
    assert stream.close_reason == close["reason"]
    assert await MediaStream.objects.filter(call=call).acount() == 1
    assert Counter(stream.stats["protocol_errors"]) == _expected_errors(frames)
    assert await CallEvent.objects.filter(call=call, type="stream.started").acount() == 1
    await wait_for(lambda: CallEvent.objects.filter(call=call, type="stream.stopped").count() == 1)
    assert (await call.__class__.objects.aget(pk=call.pk)).status == CallStatus.IN_PROGRESS
    assert registry.open_count == 0 and registry.pending_count == 0
