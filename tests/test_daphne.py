"""End to end: a real daphne process, real Redis, PostgreSQL and a real WebSocket client.

The test process plays Twilio (HTTP webhook + media stream) and, as a
separate process from daphne, makes the call speak through Redis.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from django.test import override_settings
from websockets.exceptions import InvalidStatus

from mediastream.api import Outcome, ainterrupt, aspeak
from mediastream.closing import CLOSES
from mediastream.simulator import TwilioStream
from voicecall.models import CallEvent, MediaStream, TranscriptSegment

from .live import CONSTANT_TTS, ROOT, Live
from .streams import hang_up, open_call, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

@pytest.fixture(scope="module")
def live(daphne):
    with daphne.start({"TTS": CONSTANT_TTS}, name="daphne-constant-tts") as live:
        yield live


async def test_unsigned_upgrade_gets_403(live):
    stream = TwilioStream(live.ws, auth_token="wrong", call_sid="CA" + "0" * 32)
    with pytest.raises(InvalidStatus) as excinfo:
        await stream.connect()
    assert excinfo.value.response.status_code == 403


async def test_call_speaks_from_another_process_and_stops(live):
    call, stream = await open_call(live)
    await stream.stream_audio(b"\xff" * 1600, realtime=False)
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        result = await aspeak(call.call_sid, "Hello from another process.", wait=True, timeout=15)
    assert result.outcome is Outcome.PLAYED, result
    assert result.first_audio_ms is not None
    messages = stream.media_frames
    assert messages and all(len(audio) % 160 == 0 for audio in messages)  # whole 20 ms frames
    assert stream.agent_audio == b"".join(messages)
    await stream.send_dtmf("5")
    await wait_for(lambda: CallEvent.objects.filter(call__call_sid=call.call_sid, type="dtmf").exists())
    await stream.stop()
    assert await stream.wait_closed() == 1000
    row = await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid, stopped_at__isnull=False).first())
    assert row.close_reason == CLOSES.STOPPED.reason
    assert row.stats["media_frames"] == 10
    segment = await TranscriptSegment.objects.aget(call__call_sid=call.call_sid, speaker="agent")
    assert segment.text == "Hello from another process." and not segment.interrupted


async def test_interrupt_from_another_process_clears_and_stops_audio(live):
    call, stream = await open_call(live)
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        item_id = await aspeak(call.call_sid, "A long answer that keeps going. " * 8)
        await stream.next_event("media")
        assert await ainterrupt(call.call_sid, "operator", wait=True) == 1
    await stream.next_event("clear")
    events = [m["event"] for m in stream.received]
    assert "media" not in events[events.index("clear") :]
    event = await wait_for(
        lambda: CallEvent.objects.filter(call__call_sid=call.call_sid, type="playback.finished").first()
    )
    assert event.payload["item_id"] == item_id
    assert event.payload["outcome"] == "interrupted" and event.payload["reason"] == "operator"
    segment = await wait_for(lambda: TranscriptSegment.objects.filter(call__call_sid=call.call_sid).first())
    assert segment.interrupted
    await hang_up(stream)


async def test_oversize_frame_is_closed_with_4009(live):
    call, stream = await open_call(live)
    await stream.ws.send('{"event":"media","pad":"' + "x" * 70_000 + '"}')
    assert await stream.wait_closed() == CLOSES.MESSAGE_TOO_BIG.code
    row = await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid, stopped_at__isnull=False).first())
    assert row.close_code == CLOSES.MESSAGE_TOO_BIG.code


async def manage(live: Live, *args: str) -> tuple[int, str, str]:
    """Run a management command in a separate process, against the live server's Redis and database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_live",
        "DATABASE_URL": live.database_url,
        "REDIS_URL": live.redis_url,
        "CHANNEL_LAYER_PREFIX": live.prefix,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", *args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_speak_management_command_from_a_separate_process(live):
    call, stream = await open_call(live)
    code, out, err = await manage(live, "speak", call.call_sid, "Your table is booked.", "--timeout", "15")
    assert code == 0, err
    assert out.startswith("played "), out
    assert stream.media_frames
    await hang_up(stream)


async def test_interrupt_management_command(live):
    call, stream = await open_call(live)
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        await aspeak(call.call_sid, "A long answer that keeps going. " * 8)
    await stream.next_event("media")
    code, out, err = await manage(live, "interrupt", call.call_sid, "--reason", "operator")
    assert code == 0, err
    assert out.strip() == "interrupted 1 item(s)"
    await stream.next_event("clear")
    code, out, err = await manage(live, "interrupt", "CA" + "e" * 32)
    assert code != 0 and "No live stream" in err
    await hang_up(stream)


async def test_speak_to_a_call_without_stream_says_so(live):
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        result = await aspeak("CA" + "f" * 32, "anyone there?", wait=True, timeout=5)
    assert result.outcome is Outcome.NO_STREAM


async def test_waiting_speaker_hears_interrupted_when_the_call_hangs_up(live):
    call, stream = await open_call(live)
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        def queued_items() -> int:
            return CallEvent.objects.filter(call__call_sid=call.call_sid, type="playback.queued").count()

        waiting = asyncio.ensure_future(aspeak(call.call_sid, "A long answer that keeps going. " * 8, wait=True, timeout=30))
        await wait_for(lambda: queued_items() == 1)  # so the short one queues behind it
        queued = asyncio.ensure_future(aspeak(call.call_sid, "And then this.", wait=True, timeout=30))
        await stream.next_event("media")
        await wait_for(lambda: queued_items() == 2)
        await hang_up(stream)
        results = await asyncio.wait_for(asyncio.gather(waiting, queued), 10)
    assert [(r.outcome, r.reason) for r in results] == [(Outcome.INTERRUPTED, "stream closed")] * 2, results
