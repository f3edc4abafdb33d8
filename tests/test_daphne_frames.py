"""daphne's WebSocket frames with mediastream's fast path (mediastream/daphne_frames.py), end to end.

Frames are written as raw bytes on the client's socket, so every form reaches
a real daphne exactly as written: short and extended lengths, several frames
in one write, a frame split over two writes, a fragmented message, and text
that is not valid UTF-8; and what the server sends (media, marks) arrives as
Twilio reads it (which autobahn, as before, fails: daphne keeps its
default ``failByDrop``, so the TCP connection is dropped and the client sees 1006).
"""

from __future__ import annotations

import json
import os
import struct

import pytest
from django.test import override_settings

from mediastream.api import Outcome, aspeak
from mediastream.closing import CLOSES
from voicecall.models import MediaStream

from .live import CONSTANT_TTS
from .streams import open_call, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

MEDIA_PAYLOAD = "/" * 216  # 162 bytes of base64


def frame(payload: bytes, *, opcode: int = 1, fin: bool = True) -> bytes:
    """One client frame (masked, as a client must), encoded by hand."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def media(stream_sid: str, seq: int) -> bytes:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20), "payload": MEDIA_PAYLOAD},
            "streamSid": stream_sid,
        },
        separators=(",", ":"),
    ).encode()


@pytest.fixture(scope="module")
def live(daphne):
    with daphne.start({"TTS": CONSTANT_TTS}, name="daphne-frames") as live:
        yield live


async def test_every_frame_form_reaches_the_stream_in_order(live):
    call, stream = await open_call(live)
    sid = stream.stream_sid
    write = stream.ws.transport.write
    mark = json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "m"}}, separators=(",", ":")).encode()
    assert len(mark) < 126 and 126 <= len(media(sid, 2)) < 65536
    write(frame(mark))  # 7-bit length
    write(frame(media(sid, 2)) + frame(media(sid, 3)) + frame(media(sid, 4)))  # 16-bit lengths, one write
    split = frame(media(sid, 5))
    write(split[:5])  # header cut short
    write(split[5:])
    whole = media(sid, 6)
    # A fragmented message goes through autobahn and daphne's queue; the plain frame written with it
    # must wait behind it there instead of being handed to the stream first.
    write(frame(whole[:10], fin=False) + frame(whole[10:50], opcode=0, fin=False) + frame(whole[50:], opcode=0)
          + frame(media(sid, 7)))  # fmt: skip
    await stream.stop()
    assert await stream.wait_closed() == 1000
    row = await wait_for(lambda: MediaStream.objects.filter(stream_sid=sid, stopped_at__isnull=False).first())
    assert row.close_reason == CLOSES.STOPPED.reason
    stats = row.stats
    assert stats["media_frames"] == 6 and stats["media_bytes"] == 6 * 162
    assert stats["marks"] == 1
    # In order: no sequence number skipped or repeated between 2 and the stop.
    assert stats["sequence_gaps"] == 0 and stats["sequence_reorders"] == 0
    assert stats["protocol_errors"] == {}
    assert stats["frames_direct"] >= 1  # the plain frames after start were handed over without the queue


@pytest.mark.parametrize(
    "text",
    [
        b'{"event":"mark","mark":{"name":"\xff"}}',  # not UTF-8 at all
        b'{"event":"mark","mark":{"name":"\xed\xa0\x80"}}',  # an encoded surrogate
        b'{"event":"mark","mark":{"name":"\xc0\xaf"}}',  # an overlong form
    ],
    ids=["invalid-byte", "surrogate", "overlong"],
)
async def test_text_that_is_not_utf8_fails_the_connection_and_never_reaches_the_stream(live, text):
    call, stream = await open_call(live)
    stream.ws.transport.write(frame(text))
    assert await stream.wait_closed() == 1006
    row = await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid, stopped_at__isnull=False).first())
    assert row.stats["marks"] == 0 and row.stats["protocol_errors"] == {}


async def test_what_the_server_sends_arrives_whole(live):
    call, stream = await open_call(live)
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        result = await aspeak(call.call_sid, "One line of speech.", wait=True, timeout=15)
    assert result.outcome is Outcome.PLAYED, result
    # Every media message read by websockets (which checks framing and UTF-8) and decoded: whole 20 ms frames.
    assert stream.media_frames and all(len(audio) % 160 == 0 for audio in stream.media_frames)
    assert len(stream.agent_audio) == sum(map(len, stream.media_frames)) > 0
    assert stream.marks_received  # short frames (under 126 bytes) too
    await stream.stop()
    assert await stream.wait_closed() == 1000
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid, stopped_at__isnull=False).exists())


async def test_both_unmaskers_agree_with_the_protocol_s_definition():
    """RFC 6455 5.3: octet i of the payload XOR octet i mod 4 of the mask (C helper and fallback alike)."""
    from mediastream.daphne_frames import _unmasker, _xor_unmask

    for length in (0, 1, 3, 4, 5, 125, 126, 300, 4099):
        payload, mask = os.urandom(length), os.urandom(4)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert _xor_unmask(payload, mask) == expected
        assert _unmasker()(payload, mask) == expected


async def test_no_debug_text_is_built_per_handshake_while_debug_is_off():
    """autobahn pretty-prints thirty options for a debug line on every connection; with debug off it is dropped unbuilt."""
    import pprint

    import txaio
    from autobahn.websocket import protocol

    from mediastream import daphne_frames

    assert daphne_frames.install()
    options = [("openHandshakeTimeout", 5, "WebSocketFactory"), ("autoPingInterval", 0, "WebSocketFactory")]
    assert protocol.pformat(options) == ""
    level = txaio.get_global_log_level()
    txaio.set_global_log_level("debug")
    try:
        assert protocol.pformat(options) == pprint.pformat(options)
    finally:
        txaio.set_global_log_level(level)
    timings = protocol.Timings()
    timings.track("onOpen")
    assert "onOpen" in str(timings)  # not a log argument: the real text whatever the level
