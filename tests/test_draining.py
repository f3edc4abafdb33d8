"""A daphne process with live calls gets SIGTERM: it drains, then exits 0.

During the grace new upgrades are refused (403) and the health check answers
503, while the live calls keep streaming and taking commands; a call that ends
meanwhile is recorded as it ended, and the one left at the end of the grace is
closed with a close frame (4013) and recorded as "Server shutting down".
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest
from django.test import override_settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mediastream.api import Outcome, aspeak
from mediastream.simulator import sign
from voicecall.models import CallEvent, MediaStream

from .live import CONSTANT_TTS
from .streams import auth_token, hang_up, open_call

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

GRACE = 6.0


async def health(live) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(f"{live.http}/healthz")


async def test_sigterm_drains_live_calls_then_closes_them_with_their_records(daphne):
    async with daphne.astart({"DRAIN_GRACE_SECONDS": GRACE, "TTS": CONSTANT_TTS}, name="drain") as live:
        with override_settings(CHANNEL_LAYERS=live.channel_layers()):
            (ending_call, ending), (staying_call, staying) = [await open_call(live) for _ in range(2)]
            before = await health(live)
            assert before.status_code == 200
            assert before.json()["live_streams"] == 2 and before.json()["draining"] is False

            loop = asyncio.get_running_loop()
            live.proc.send_signal(signal.SIGTERM)
            sent_at = loop.time()
            while (response := await health(live)).status_code != 503:
                assert loop.time() - sent_at < GRACE / 2, "the health check did not turn 503"
                await asyncio.sleep(0.05)
            assert response.json()["draining"] is True and response.json()["status"] == "draining"

            # No new streams: the upgrade is refused at the handshake.
            headers = {"X-Twilio-Signature": sign(auth_token(), "wss://voice.example.com/twilio/media-stream/")}
            with pytest.raises(InvalidStatus) as refused:
                async with connect(live.ws, additional_headers=headers, open_timeout=5):
                    pass
            assert refused.value.response.status_code == 403
            assert "server draining" in live.log.read_text()

            # The live calls go on: a command from another process is played and confirmed by its mark.
            result = await aspeak(staying_call.call_sid, "Still here.", wait=True, timeout=GRACE)
            assert result.outcome is Outcome.PLAYED
            assert not staying.closed.is_set()

            # A call that ends during the grace is recorded as it ended.
            await ending.stop()
            row = await hang_up(ending)
            assert (row.close_code, row.close_reason) == (1000, "Stream stopped")

            # The grace over, the last call gets a close frame and its records.
            code = await staying.wait_closed(GRACE + 5)
            closed_after = loop.time() - sent_at
            assert code == 4013
            assert closed_after >= GRACE - 0.5
            exit_code = await asyncio.to_thread(live.proc.wait, 10)
            exited_after = loop.time() - sent_at
    assert exit_code == 0
    assert exited_after <= GRACE + 5
    row = await MediaStream.objects.aget(stream_sid=staying.stream_sid)
    assert row.stopped_at is not None and (row.close_code, row.close_reason) == (4013, "Server shutting down")
    stopped = await CallEvent.objects.aget(stream=row, type="stream.stopped")
    assert stopped.payload["close_reason"] == "Server shutting down"
    assert await MediaStream.objects.filter(stopped_at__isnull=True).acount() == 0
    print(f"\ndrain: last call closed {closed_after:.1f}s after SIGTERM (grace {GRACE}s), exit 0 after {exited_after:.1f}s")


async def test_a_process_without_calls_stops_at_once(daphne):
    async with daphne.astart({"DRAIN_GRACE_SECONDS": 30}, name="drain-idle") as live:
        loop = asyncio.get_running_loop()
        live.proc.send_signal(signal.SIGTERM)
        sent_at = loop.time()
        exit_code = await asyncio.to_thread(live.proc.wait, 10)
    assert exit_code == 0
    assert loop.time() - sent_at < 10  # not the 30 s grace: nothing to wait for
