"""The media stream consumer through WebsocketCommunicator, against PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from mediastream import signals
from mediastream.admission import registry
from mediastream.closing import CLOSES
from mediastream.groups import events_group
from mediastream.simulator import new_sid
from voicecall.models import Call, CallEvent, CallStatus, MediaStream
from voicecall.tokens import mint_stream_token

from . import streams
from .support import mediastream_settings as ms
from .streams import communicator, live_stream, make_call, receive_close, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]



async def expect_close(comm, close) -> None:
    output = await receive_close(comm)
    assert output["code"] == close.code, output
    assert output.get("reason") == close.reason, output


async def next_event(layer, channel, name, timeout=5):
    """The next broadcast named ``name`` on an events-group listener channel."""
    while True:
        event = await asyncio.wait_for(layer.receive(channel), timeout)
        if event["event"] == name:
            return event


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    assert registry.open_count == 0, "a socket was not released"
    assert registry.pending_count == 0


# --- handshake guards -------------------------------------------------------


async def test_unsigned_upgrade_is_refused_before_accept():
    comm = communicator(signed=False)
    connected, _ = await comm.connect()
    assert not connected
    assert registry.open_count == 0


async def test_wrongly_signed_upgrade_is_refused():
    comm = communicator(signed=False, headers=[(b"x-twilio-signature", b"bm90IGEgc2lnbmF0dXJl")])
    connected, _ = await comm.connect()
    assert not connected


async def test_upgrade_signed_for_another_host_is_refused():
    sig = streams.signature("wss://attacker.example.com/twilio/media-stream/")
    comm = communicator(signed=False, headers=[(b"x-twilio-signature", sig.encode())])
    connected, _ = await comm.connect()
    assert not connected


async def test_signed_upgrade_without_trailing_slash_is_accepted():
    comm = communicator(path="/twilio/media-stream")
    connected, _ = await comm.connect()
    assert connected
    await comm.disconnect()


async def test_total_connection_cap_refuses_handshake():
    with ms(MAX_CONNECTIONS=1):
        first = communicator()
        assert (await first.connect())[0]
        second = communicator(client="198.51.100.9")
        connected, _ = await second.connect()
        assert not connected
        await first.disconnect()


async def test_full_pending_cap_parks_the_silent_socket_of_the_busier_address():
    # A socket that never sends start must not keep a real call out: the newcomer
    # from an address holding fewer pending sockets takes the slot; the displaced
    # one keeps its start window (a slow real stream still gets in).
    with ms(MAX_PENDING_CONNECTIONS=1):
        call, token = await make_call()
        first = communicator(client="198.51.100.1")
        assert (await first.connect())[0]
        second = communicator(client="198.51.100.2")
        assert (await second.connect())[0]
        assert await first.receive_nothing(0.05) and await second.receive_nothing(0.05)
        stream_sid = new_sid("MZ")
        await first.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
        await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
        # The same address cannot displace its own: the pending cap still refuses.
        third = communicator(client="198.51.100.2")
        assert (await third.connect())[0]
        await expect_close(third, CLOSES.TOO_MANY_PENDING)
        await second.disconnect()
        await first.disconnect()


async def test_beyond_the_parking_cap_a_displaced_socket_is_closed_4013():
    with ms(MAX_PENDING_CONNECTIONS=1, MAX_PARKED_CONNECTIONS=0):
        first = communicator(client="198.51.100.1")
        assert (await first.connect())[0]
        second = communicator(client="198.51.100.2")
        assert (await second.connect())[0]
        await expect_close(first, CLOSES.EVICTED)
        await second.disconnect()


async def test_a_socket_that_sent_start_is_not_evicted():
    with ms(MAX_PENDING_CONNECTIONS=1):
        call, token = await make_call()
        first = communicator(client="198.51.100.1")
        assert (await first.connect())[0]
        stream_sid = new_sid("MZ")
        await first.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
        await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
        second = communicator(client="198.51.100.2")
        assert (await second.connect())[0]
        assert await first.receive_nothing(0.05)  # streaming, promoted: it holds no pending slot at all
        await second.disconnect()
        await first.disconnect()


async def test_pending_cap_per_ip():
    with ms(MAX_PENDING_CONNECTIONS_PER_IP=1):
        first = communicator(client="198.51.100.1")
        assert (await first.connect())[0]
        same_ip = communicator(client="198.51.100.1")
        assert (await same_ip.connect())[0]
        await expect_close(same_ip, CLOSES.TOO_MANY_PENDING)
        other_ip = communicator(client="198.51.100.2")
        assert (await other_ip.connect())[0]
        assert await other_ip.receive_nothing(0.05)
        await first.disconnect()
        await other_ip.disconnect()


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored():
    with ms(MAX_PENDING_CONNECTIONS_PER_IP=1, TRUSTED_PROXIES=["10.0.0.1"]):
        first = communicator(client="198.51.100.1", headers=[(b"x-forwarded-for", b"192.0.2.1")])
        assert (await first.connect())[0]
        second = communicator(client="198.51.100.1", headers=[(b"x-forwarded-for", b"192.0.2.2")])
        assert (await second.connect())[0]
        await expect_close(second, CLOSES.TOO_MANY_PENDING)
        await first.disconnect()


async def test_forwarded_for_from_trusted_proxy_names_the_client():
    with ms(MAX_PENDING_CONNECTIONS_PER_IP=1, TRUSTED_PROXIES=["10.0.0.0/8"]):
        first = communicator(client="10.0.0.1", headers=[(b"x-forwarded-for", b"192.0.2.1, 10.0.0.5")])
        assert (await first.connect())[0]
        second = communicator(client="10.0.0.1", headers=[(b"x-forwarded-for", b"192.0.2.2")])
        assert (await second.connect())[0]
        assert await second.receive_nothing(0.05)
        await first.disconnect()
        await second.disconnect()


async def test_socket_without_start_is_closed_after_timeout():
    with ms(PRE_START_TIMEOUT=0.05):
        comm = communicator()
        assert (await comm.connect())[0]
        await expect_close(comm, CLOSES.START_TIMEOUT)


async def test_oversize_message_closes_before_parsing():
    call, token = await make_call()
    comm = communicator()
    assert (await comm.connect())[0]
    stream_sid = new_sid("MZ")
    # A valid start padded past 64 KiB: refused by size, so no stream is recorded.
    await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token, padding="x" * 70_000))
    await expect_close(comm, CLOSES.MESSAGE_TOO_BIG)
    assert not await MediaStream.objects.filter(stream_sid=stream_sid).aexists()


# --- malformed input keeps the socket ---------------------------------------


async def test_malformed_and_unknown_messages_keep_the_socket():
    call, token = await make_call()
    comm = communicator()
    assert (await comm.connect())[0]
    await comm.send_to(text_data="{not json")
    await comm.send_to(text_data=json.dumps({"event": "play", "streamSid": "MZ1"}))
    await comm.send_to(text_data=json.dumps([1, 2]))
    stream_sid = new_sid("MZ")
    await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
    await comm.send_to(text_data=streams.media(stream_sid, seq=2))
    await comm.send_to(text_data=json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": "%%%"}}))
    await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid))
    await expect_close(comm, CLOSES.STOPPED)
    await comm.disconnect()
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stats["protocol_errors"] == {"malformed": 2, "unknown_event": 1, "invalid": 1}
    assert stream.stats["media_frames"] == 1


async def test_media_before_start_is_ignored():
    call, token = await make_call()
    comm = communicator()
    assert (await comm.connect())[0]
    stream_sid = new_sid("MZ")
    await comm.send_to(text_data=streams.media(stream_sid))
    await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
    await comm.disconnect()
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stats["media_before_start"] == 1
    assert stream.stats["media_frames"] == 0


async def test_sequence_and_timestamp_gaps_are_counted():
    async with live_stream() as (comm, call, stream_sid):
        await comm.send_to(text_data=streams.media(stream_sid, seq=2, timestamp=0))
        await comm.send_to(text_data=streams.media(stream_sid, seq=3, timestamp=20))
        await comm.send_to(text_data=streams.media(stream_sid, seq=7, timestamp=200))
        await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid, seq=8))
        await receive_close(comm)
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stats["sequence_gaps"] == 3
    assert stream.stats["timestamp_gaps"] == 1
    assert stream.stats["timestamp_gap_ms"] == 160


# --- start validation -------------------------------------------------------


@pytest.mark.parametrize(
    "case,close",
    [
        ("missing_call_sid", CLOSES.MISSING_CALL_SID),
        ("unknown_call", CLOSES.UNKNOWN_CALL),
        ("ended_call", CLOSES.CALL_ENDED),
        ("wrong_token", CLOSES.INVALID_TOKEN),
        ("no_token", CLOSES.INVALID_TOKEN),
    ],
)
async def test_start_is_refused(case, close):
    call, token = await make_call(CallStatus.COMPLETED if case == "ended_call" else CallStatus.RINGING)
    call_sid = {"missing_call_sid": "", "unknown_call": new_sid("CA")}.get(case, call.call_sid)
    token = {"wrong_token": "not-the-token", "no_token": None}.get(case, token)
    stream_sid = new_sid("MZ")
    comm = communicator()
    assert (await comm.connect())[0]
    await comm.send_to(text_data=streams.start(call_sid, stream_sid, token))
    await expect_close(comm, close)
    await comm.disconnect()
    assert not await MediaStream.objects.filter(stream_sid=stream_sid).aexists()
    if case in ("ended_call", "wrong_token", "no_token"):
        event = await CallEvent.objects.aget(call=call, type="stream.rejected")
        assert event.payload["reason"] == close.reason


async def test_second_start_on_a_socket_closes_it():
    async with live_stream() as (comm, call, stream_sid):
        await comm.send_to(text_data=streams.start(call.call_sid, new_sid("MZ"), "x"))
        await expect_close(comm, CLOSES.DUPLICATE_START)
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stopped_at is not None
    assert stream.close_code == CLOSES.DUPLICATE_START.code


async def test_a_call_has_one_live_stream():
    call, token = await make_call()
    first = communicator()
    assert (await first.connect())[0]
    await first.send_to(text_data=streams.start(call.call_sid, new_sid("MZ"), token))
    await wait_for(lambda: MediaStream.objects.filter(call=call).exists())
    # The first stream spent its token; even a valid unspent one cannot open a second live stream.
    fresh, fresh_hash = mint_stream_token()
    await Call.objects.filter(pk=call.pk).aupdate(stream_token_hash=fresh_hash)
    second = communicator(client="198.51.100.3")
    assert (await second.connect())[0]
    await second.send_to(text_data=streams.start(call.call_sid, new_sid("MZ"), fresh))
    await expect_close(second, CLOSES.STREAM_EXISTS)
    assert await first.receive_nothing(0.05)
    await first.disconnect()
    await second.disconnect()
    assert await MediaStream.objects.filter(call=call).acount() == 1


# --- lifecycle --------------------------------------------------------------


async def test_accepted_start_records_and_announces_the_stream():
    started, stopped = [], []

    def on_started(sender, **kwargs):
        started.append(kwargs)

    def on_stopped(sender, **kwargs):
        stopped.append(kwargs)

    signals.stream_started.connect(on_started)
    signals.stream_stopped.connect(on_stopped)
    try:
        call, token = await make_call()
        layer = get_channel_layer()
        listener = await layer.new_channel()
        await layer.group_add(events_group(call.call_sid), listener)
        comm = communicator()
        assert (await comm.connect())[0]
        stream_sid = new_sid("MZ")
        await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token, FirstName="Jane"))
        event = await next_event(layer, listener, "stream.started")
        assert event["stream_sid"] == stream_sid
        stream = await MediaStream.objects.select_related("call").aget(stream_sid=stream_sid)
        assert stream.custom_parameters == {"FirstName": "Jane"}  # the token is never stored
        assert stream.call.status == CallStatus.IN_PROGRESS
        assert stream.call.answered_at is not None
        await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid))
        await expect_close(comm, CLOSES.STOPPED)
        await comm.disconnect()
        await comm.disconnect()  # teardown is idempotent
        event = await next_event(layer, listener, "stream.stopped")
        assert event["data"] == {"close_code": 1000, "close_reason": CLOSES.STOPPED.reason}
    finally:
        signals.stream_started.disconnect(on_started)
        signals.stream_stopped.disconnect(on_stopped)
    assert [s["stream_sid"] for s in started] == [stream_sid]
    assert [s["stream_sid"] for s in stopped] == [stream_sid]
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stopped_at is not None and stream.close_code == 1000
    assert await CallEvent.objects.filter(stream=stream, type="stream.stopped").acount() == 1


async def test_socket_closed_without_stop_ends_the_stream():
    async with live_stream() as (comm, call, stream_sid):
        pass  # live_stream disconnects with code 1000 and no stop
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stopped_at is not None
    assert stream.close_reason == "socket closed"


async def test_dtmf_is_recorded_and_announced():
    digits = []

    def on_dtmf(sender, digit, **kwargs):
        digits.append(digit)

    signals.dtmf_received.connect(on_dtmf)
    try:
        async with live_stream() as (comm, call, stream_sid):
            await comm.send_to(
                text_data=json.dumps({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "7"}})
            )
            event = await wait_for(lambda: CallEvent.objects.filter(call=call, type="dtmf").first())
            assert event.payload == {"digit": "7"}
    finally:
        signals.dtmf_received.disconnect(on_dtmf)
    assert digits == ["7"]


async def test_no_task_outlives_the_stream():
    from mediastream import heartbeat

    before = {t for t in asyncio.all_tasks()}
    async with live_stream() as (comm, call, stream_sid):
        await comm.send_to(text_data=streams.media(stream_sid))
        stream = await MediaStream.objects.aget(stream_sid=stream_sid)
        assert stream.pk in heartbeat._live
        running = {t.get_name().split(":")[0] for t in asyncio.all_tasks() - before}
        assert {"announcer", "mediastream-reader"} <= running
    await asyncio.sleep(0)
    leftovers = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert not [n for n in leftovers if n.split(":")[0] in {"playback", "announcer", "stt-connect", "play", "mediastream-reader"}], leftovers
    assert stream.pk not in heartbeat._live


async def test_crashing_handler_leaves_no_task_and_closes_the_stream(monkeypatch):
    from mediastream.consumers import MediaStreamConsumer

    async def boom(self, message):
        raise RuntimeError("handler bug")

    before = {t for t in asyncio.all_tasks()}
    call, token = await make_call()
    comm = communicator()
    assert (await comm.connect())[0]
    stream_sid = new_sid("MZ")
    await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
    monkeypatch.setattr(MediaStreamConsumer, "websocket_receive", boom)
    await comm.send_to(text_data=streams.media(stream_sid))
    with pytest.raises(RuntimeError):
        await comm.wait(2)
    leftovers = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert not [n for n in leftovers if n.split(":")[0] in {"playback", "announcer", "stt-connect", "mediastream-reader"}], leftovers
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert stream.stopped_at is not None
    assert stream.close_reason == "consumer crashed"


async def test_stream_that_stops_draining_is_closed_for_backpressure():
    # Twilio confirms played audio with mark echoes; this client never echoes.
    tts = {"BACKEND": "mediastream.tts.dummy.ConstantBackend", "OPTIONS": {"VALUE": 100, "SAMPLE_RATE": 8000, "DURATION_MS": 3000}}
    with ms(TTS=tts, MAX_UNCONFIRMED_AUDIO_SECONDS=0.5, PLAYBACK_LEAD_SECONDS=10.0):
        async with live_stream() as (comm, call, stream_sid):
            from mediastream.api import aspeak

            await aspeak(call.call_sid, "a long reply nobody hears")
            frames = 0
            while True:
                output = await comm.receive_output(3)
                if output["type"] == "websocket.close":
                    break
                message = json.loads(output["text"])
                if message["event"] == "media":
                    frames += len(base64.b64decode(message["media"]["payload"])) // 160
            assert output["code"] == CLOSES.BACKPRESSURE.code
            assert output["reason"] == CLOSES.BACKPRESSURE.reason
            assert 25 < frames <= 30  # 0.5 s of audio, the message that went past it (100 ms), then nothing more
        stream = await MediaStream.objects.aget(stream_sid=stream_sid)
        assert stream.close_code == CLOSES.BACKPRESSURE.code


async def test_play_audio_accepts_a_wav_in_any_common_format_and_reports_the_outcome(tmp_path):
    import base64
    import wave

    from mediastream.api import Outcome, aplay_audio

    path = tmp_path / "prompt.wav"
    with wave.open(str(path), "wb") as wav:  # 16 kHz PCM16, 0.2 s of a constant level
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes((1000).to_bytes(2, "little", signed=True) * 3200)
    async with live_stream() as (comm, call, stream_sid):
        task = asyncio.ensure_future(aplay_audio(call.call_sid, path, wait=True, timeout=10))
        audio = b""
        while True:
            message = await comm.receive_json_from(timeout=5)
            if message["event"] == "media":
                audio += base64.b64decode(message["media"]["payload"])
            elif message["event"] == "mark" and message["mark"]["name"].endswith(":end"):
                await comm.send_to(text_data=streams.mark(stream_sid, message["mark"]["name"]))
                break
        result = await task
        assert result.outcome is Outcome.PLAYED
        assert len(audio) == 1600  # 0.2 s at 8 kHz, whole frames
        assert set(audio[80:-80]) == {0xCE}  # PCM 1000 -> mu-law 0xCE after resampling
        # Raw 8 kHz mu-law goes through untouched.
        await aplay_audio(call.call_sid, b"\x42" * 160)
        message = await comm.receive_json_from(timeout=5)
        assert base64.b64decode(message["media"]["payload"]) == b"\x42" * 160


async def test_stream_ended_by_the_call_status_callback_still_reports_how_it_closed():
    from voicecall.records import close_open_streams

    stopped = []

    def on_stopped(sender, **kwargs):
        stopped.append(kwargs)

    signals.stream_stopped.connect(on_stopped)
    try:
        async with live_stream() as (comm, call, stream_sid):
            # Twilio's "completed" callback wins the race with the socket's stop.
            await database_sync_to_async(close_open_streams)(call)
            await comm.send_to(text_data=streams.stop(call.call_sid, stream_sid))
            await expect_close(comm, CLOSES.STOPPED)
    finally:
        signals.stream_stopped.disconnect(on_stopped)
    assert [s["stream_sid"] for s in stopped] == [stream_sid]
    stream = await MediaStream.objects.aget(stream_sid=stream_sid)
    assert (stream.close_code, stream.close_reason) == (1000, CLOSES.STOPPED.reason)
    assert await CallEvent.objects.filter(stream=stream, type="stream.stopped").acount() == 1


async def test_start_after_the_start_timeout_admits_nothing():
    call, token = await make_call()
    with ms(PRE_START_TIMEOUT=0.01):
        comm = communicator()
        assert (await comm.connect())[0]
        await expect_close(comm, CLOSES.START_TIMEOUT)
        stream_sid = new_sid("MZ")
        await comm.send_to(text_data=streams.start(call.call_sid, stream_sid, token))
        await comm.disconnect()
    assert not await MediaStream.objects.filter(stream_sid=stream_sid).aexists()
