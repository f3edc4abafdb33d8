"""The Prometheus endpoint, scraped from real daphne processes during real calls.

A call through the signed webhook and upgrade (:func:`tests.streams.open_call`)
talks to the embedded demo agent: the caller speaks a Piper clip over the
greeting (the local VAD barges in), the fake Deepgram (tests/vendors_stt) sends
its final, the agent answers through the constant TTS, the vendor drops and
the session reconnects. ``/metrics`` is scraped from loopback while that
happens and after, and parsed with prometheus_client's own parser. Then the
access rule (another loopback address as the client), and multiprocess mode
(two daphne processes sharing ``PROMETHEUS_MULTIPROC_DIR``, one of them killed).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from mediastream.simulator import TwilioStream
from voicecall.models import CallEvent

from .audio_fixtures import speech_clip
from .live import CONSTANT_TTS, ROOT, Live
from .streams import auth_token, hang_up, open_call, signed_url, wait_for
from .support import requires_speech
from .vendors_stt.deepgram import FakeDeepgram

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

DEMO_AGENT = {"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"SCRIPT": "mediastream.agents.demo"}}
QUESTION = "What are your opening hours?"
DISCARD = {"BACKEND": "mediastream.transcription.discard.DiscardBackend", "OPTIONS": {}}


# --- scraping -------------------------------------------------------------------------------------


class Scrape(dict):
    """One scrape: sample value by (sample name, labels as sorted tuples)."""

    def value(self, name: str, **labels: str) -> float:
        return self.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(live: Live, *, client: httpx.AsyncClient | None = None) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as default:
        response = await (client or default).get(f"{live.http}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = Scrape()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scraped(live: Live, predicate, timeout: float = 10.0) -> Scrape:
    """Scrape until ``predicate(samples)`` holds (the counters move at health ticks and stream ends)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await scrape(live)
        if predicate(samples):
            return samples
        if loop.time() > deadline:
            raise AssertionError(f"metrics never matched; last scrape: {dict(samples)}")
        await asyncio.sleep(0.05)


async def refused_upgrade(live: Live) -> None:
    """An unsigned media stream upgrade: 403 at the handshake."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(live.ws, open_timeout=10):
            pass
    assert refused.value.response.status_code == 403


def _event(call_sid: str, type_: str):
    return CallEvent.objects.filter(call__call_sid=call_sid, type=type_).order_by("id").first()


# --- during a call --------------------------------------------------------------------------------


@requires_speech
async def test_a_call_is_measured_while_it_runs(daphne):
    clip = speech_clip(QUESTION)
    async with FakeDeepgram() as fake:
        overrides = {
            "AGENT": DEMO_AGENT,
            "TTS": CONSTANT_TTS,  # the greeting plays about four seconds: long enough to be talked over
            "TRANSCRIPTION": {
                "BACKEND": "mediastream.transcription.deepgram.DeepgramBackend",
                "OPTIONS": {"API_KEY": "dg-test-key", "URL": fake.url, "RECONNECT_DELAY": 0.05},
            },
            "STREAM_HEALTH_SECONDS": 0.2,
        }
        async with daphne.astart(overrides, name="daphne-metrics") as live:
            before = await scrape(live)
            assert before.value("mediastream_streams_live") == 0
            assert before.value("mediastream_media_frames_in_total") == 0

            # A refused upgrade is counted by its reason; a silent socket is pending until it goes.
            await refused_upgrade(live)
            silent = TwilioStream(live.ws, signed_url=signed_url(), auth_token=auth_token(), call_sid="CA" + "1" * 32)
            await silent.connect()
            await scraped(live, lambda m: m.value("mediastream_streams_pending") == 1)
            await silent.close()
            refused = await scraped(live, lambda m: m.value("mediastream_streams_pending") == 0)
            assert refused.value("mediastream_refusals_total", reason="bad signature") == 1

            call, stream = await open_call(live, timeout=10)
            connection = await fake.wait_connections(1, timeout=10)
            await wait_for(lambda: _event(call.call_sid, "transcription.ready"), timeout=10)
            during = await scrape(live)
            assert during.value("mediastream_streams_live") == 1

            # The caller talks over the greeting in real time: the VAD cuts it off (barge-in).
            await wait_for(lambda: _event(call.call_sid, "playback.started"), timeout=10)
            await stream.stream_audio(clip.mulaw, realtime=True)
            clip_frames = -(-len(clip.mulaw) // 160)  # the last frame padded
            await fake.wait_for(lambda: len(FakeDeepgram.audio(connection)) >= len(clip.mulaw), timeout=10)
            interrupted = await wait_for(lambda: _event(call.call_sid, "playback.finished"), timeout=10)
            assert interrupted.payload["outcome"] == "interrupted" and interrupted.payload["reason"] == "barge-in"
            grown = await scraped(live, lambda m: m.value("mediastream_media_frames_in_total") == clip_frames)
            assert grown.value("mediastream_barge_in_latency_seconds_count") == 1
            # From the VAD's speech start to the cut: the VAD's own delay, less than the clip's speech.
            assert 0 < grown.value("mediastream_barge_in_latency_seconds_sum") < (clip.end_ms - clip.onset_ms) / 1000

            # Deepgram's final, timed on its connection (which began with the stream): the agent answers.
            await fake.results(
                QUESTION, is_final=True, speech_final=True,
                start=clip.onset_ms / 1000, duration=(clip.end_ms - clip.onset_ms) / 1000,
            )
            first_audio = await wait_for(lambda: _event(call.call_sid, "agent.first_audio"), timeout=15)
            await wait_for(lambda: _event(call.call_sid, "agent.reply.finished"), timeout=30)
            # The final came with every byte of the clip received: its end of speech was the clip's tail ago.
            stt = (clip_frames * 20 - clip.end_ms) / 1000
            answered = await scraped(
                live, lambda m: m.value("mediastream_media_frames_out_total") == sum(map(len, stream.media_frames)) // 160
            )
            assert answered.value("mediastream_stt_final_latency_seconds_count", backend="DeepgramBackend") == 1
            assert answered.value("mediastream_stt_final_latency_seconds_sum", backend="DeepgramBackend") == pytest.approx(stt)
            assert answered.value("mediastream_voice_to_voice_seconds_count") == 1
            assert answered.value("mediastream_voice_to_voice_seconds_sum") == pytest.approx(
                stt + first_audio.payload["ms"] / 1000, abs=0.002
            )
            for stage in ("stt", "agent_first_token", "tts_first_audio"):
                assert answered.value("mediastream_voice_to_voice_stage_seconds_count", stage=stage) == 1, stage
            stages = sum(
                answered.value("mediastream_voice_to_voice_stage_seconds_sum", stage=stage)
                for stage in ("stt", "agent_first_token", "tts_first_audio")
            )
            assert stages == pytest.approx(answered.value("mediastream_voice_to_voice_seconds_sum"), abs=0.002)
            # The greeting and the reply, each synthesized in pieces; Twilio's mark echoes were timed.
            assert answered.value("mediastream_tts_first_audio_seconds_count", backend="ConstantBackend") >= 2
            assert answered.value("mediastream_mark_round_trip_seconds_count") >= 1
            assert answered.value("mediastream_vendor_reconnects_total", vendor="stt", backend="Deepgram") == 0

            # The vendor drops the session: it reconnects, and that is counted.
            await fake.drop(connection)
            await fake.wait_connections(2, timeout=10)
            await scraped(live, lambda m: m.value("mediastream_vendor_reconnects_total", vendor="stt", backend="Deepgram") == 1)

            # More audio: frames in keeps growing while the call lasts.
            await stream.stream_audio(b"\xff" * 160 * 25, realtime=False)
            await scraped(live, lambda m: m.value("mediastream_media_frames_in_total") == clip_frames + 25)

            row = await hang_up(stream)
            after = await scraped(live, lambda m: m.value("mediastream_streams_live") == 0)
            assert after.value("mediastream_media_frames_in_total") == row.stats["media_frames"] == clip_frames + 25
            assert after.value("mediastream_playback_queue_depth") == 0
            assert after.value("mediastream_refusals_total", reason="bad signature") == 1


# --- who may scrape -------------------------------------------------------------------------------


async def test_only_allowed_networks_or_the_token_may_scrape(daphne):
    overrides = {"METRICS_ALLOWED_NETWORKS": ["127.0.0.1/32"], "METRICS_BEARER_TOKEN": "scrape-token-0123"}
    async with daphne.astart(overrides, name="daphne-metrics-access") as live:
        url = f"{live.http}/metrics"
        # Another loopback address is not in the allowed list.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, timeout=10) as other:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic scrape-token-0123"}):
                refused = await other.get(url, headers=headers)
                assert refused.status_code == 403, headers
                assert refused.content == b""
            allowed = await other.get(url, headers={"Authorization": "Bearer scrape-token-0123"})
            assert allowed.status_code == 200 and "mediastream_streams_live" in allowed.text
        async with httpx.AsyncClient(timeout=10) as loopback:
            assert (await loopback.get(url)).status_code == 200
            assert (await loopback.post(url)).status_code == 405


# --- several processes on one host ------------------------------------------------------------------


async def test_multiprocess_mode_sums_the_processes_and_forgets_dead_ones(daphne, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # the daphne processes inherit it
    overrides = {"TTS": CONSTANT_TTS, "TRANSCRIPTION": DISCARD, "VAD": {"ENABLED": False}, "STREAM_HEALTH_SECONDS": 0.2}
    async with daphne.astart(overrides, name="daphne-mp-a") as a, daphne.astart(overrides, name="daphne-mp-b") as b:
        for live in (a, b):
            await refused_upgrade(live)
        _, stream_a = await open_call(a, timeout=10)
        _, stream_b = await open_call(b, timeout=10)
        await stream_a.stream_audio(b"\xff" * 160 * 10, realtime=False)
        await stream_b.stream_audio(b"\xff" * 160 * 15, realtime=False)
        both = lambda m: m.value("mediastream_media_frames_in_total") == 25  # noqa: E731
        from_a = await scraped(a, both)
        from_b = await scraped(b, both)
        for samples in (from_a, from_b):  # either process answers for the host
            assert samples.value("mediastream_streams_live") == 2
            assert samples.value("mediastream_refusals_total", reason="bad signature") == 2

        # B is killed (no exit hook runs): the next scrape drops its live gauge, its counters stay.
        b.proc.kill()
        b.proc.wait(10)
        alone = await scrape(a)
        assert alone.value("mediastream_streams_live") == 1
        assert alone.value("mediastream_media_frames_in_total") == 25
        assert alone.value("mediastream_refusals_total", reason="bad signature") == 2
        await stream_b.close()
        await hang_up(stream_a)
        await scraped(a, lambda m: m.value("mediastream_streams_live") == 0)


async def test_a_process_that_exits_drops_its_live_gauges(tmp_path):
    """The exit hook (installed when the app is ready): the gauge files of the PID go, the counters' stay."""
    script = textwrap.dedent(
        """
        import os
        import django
        django.setup()
        from mediastream.metrics import FRAMES_IN, STREAMS_LIVE
        STREAMS_LIVE.inc()
        FRAMES_IN.inc(3)
        print(os.getpid())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    pid = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert f"counter_{pid}.db" in files
    assert not [name for name in files if name.startswith("gauge_live")], files
