"""The per-host speech pool (``manage.py speech_pool``), for real: its process, its socket, daphne using it.

* two daphne processes share one pool: callers of both are transcribed and
  spoken to by it, and neither daphne loads Whisper or starts a Piper worker;
* the pool restarts (cleanly, or killed with its socket left behind): requests
  in flight fail with a clear error, the next one reconnects;
* a second pool on a live socket refuses to start; a client that breaks the
  protocol is dropped without disturbing the others.

The contract suites (``test_transcription_backends.py``, ``test_tts_backends.py``)
run every backend test on the pooled backends as well.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from mediastream.api import aspeak
from mediastream.speechpool import protocol
from mediastream.speechpool.client import PoolClient
from mediastream.tts.base import TTSError
from voicecall.models import TranscriptSegment

from .audio_fixtures import speech_clip
from .speechpool_support import ROOT, SpeechPoolProcess, running_pool
from .streams import hang_up, wait_for
from .support import requires_speech
from .test_speech_e2e import open_tapped_call, speak_into, words

pytestmark = [requires_speech, pytest.mark.asyncio]

BOOKING = "Please book a table for two at seven tonight."


def pooled(path: str) -> dict:
    return {
        "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {"POOL": path}},
        "TTS": {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {"POOL": path}},
    }


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def maps_ctranslate2(pid: int) -> bool:
    return "ctranslate2" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def shared_pool(tmp_path_factory):
    yield from running_pool(tmp_path_factory, "--stt-workers", "2", "--tts-workers", "2")


@pytest.mark.django_db(transaction=True)
async def test_two_daphne_processes_share_one_pool(daphne, shared_pool):
    stats = PoolClient(shared_pool.socket_path, "stats")
    before = await stats.stats()
    async with daphne.astart(pooled(shared_pool.socket_path), name="daphne-pool-1") as one:
        async with daphne.astart(pooled(shared_pool.socket_path), name="daphne-pool-2") as two:
            for live in (one, two):
                call, stream, tap = await open_tapped_call(live)
                speaking = speak_into(stream, speech_clip(BOOKING))
                await speaking.task
                segment = await wait_for(
                    lambda: TranscriptSegment.objects.filter(call__call_sid=call.call_sid, speaker="caller").first(),
                    timeout=30,
                )
                expected = words(BOOKING)
                assert len(expected & words(segment.text)) >= 0.75 * len(expected), segment.text
                since = len(tap.log)
                with override_settings(CHANNEL_LAYERS=live.channel_layers()):
                    await aspeak(call.call_sid, "Your table is booked.")
                await tap.wait("media", since, timeout=30)  # Piper's audio, from the pool
                await hang_up(stream)
                # The models live in the pool: no Piper worker child, no CTranslate2 in daphne.
                assert children(live.proc.pid) == [], live.name
                assert not maps_ctranslate2(live.proc.pid), live.name
    after = await stats.stats()
    stats.close()
    assert after["transcribe"] >= before.get("transcribe", 0) + 2
    assert after["synthesize"] >= before.get("synthesize", 0) + 2
    assert after["connections_opened"] >= before["connections_opened"] + 4  # STT and TTS of each daphne
    assert maps_ctranslate2(shared_pool.pid)


async def test_a_restarted_pool_is_reconnected_to(tmp_path):
    from mediastream.tts.piper import PiperBackend

    path = str(tmp_path / "speech.sock")
    backend = PiperBackend(POOL=path)
    pool = SpeechPoolProcess(path, "--no-stt", "--tts-workers", "1").start()
    try:
        assert [c async for c in backend.synthesize("Before the restart.")]
        pool.kill()  # a crash: the socket file stays behind
        assert os.path.exists(path)
        with pytest.raises(TTSError, match=re.escape('MEDIASTREAM["TTS"]["OPTIONS"]["POOL"]')):
            async for _ in backend.synthesize("The pool is down."):
                pass
        pool = SpeechPoolProcess(path, "--no-stt", "--tts-workers", "1").start()  # takes over the stale socket
        assert [c async for c in backend.synthesize("After the restart.")]
        pool.stop()  # a clean stop removes the socket
        assert not os.path.exists(path)
    finally:
        pool.kill()
        await backend.aclose()


async def test_a_second_pool_on_a_live_socket_refuses_to_start(shared_pool):
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "manage.py"), "speech_pool", "--socket", shared_pool.socket_path, "--no-stt", "--no-tts"],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "another speech pool is already listening" in result.stderr
    assert os.path.exists(shared_pool.socket_path)  # the live pool's socket is left alone


async def test_without_a_socket_the_command_names_the_settings():
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "manage.py"), "speech_pool", "--no-stt", "--no-tts"],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'MEDIASTREAM["TRANSCRIPTION"]["OPTIONS"]["POOL"]' in result.stderr


async def test_a_client_that_breaks_the_protocol_is_dropped_alone(shared_pool):
    good = PoolClient(shared_pool.socket_path, "good")
    await good.connect()
    reader, writer = await asyncio.open_unix_connection(shared_pool.socket_path)
    hello = await protocol.read_frame(reader)
    assert hello.kind == protocol.HELLO and hello.json()["stt"]["model"] == "base"
    writer.write(protocol.pack(b"?", 1, b"junk"))
    assert await reader.read() == b""  # the pool closed that connection
    writer.close()
    chunks = [c async for c in good.synthesize("Still serving.", None)]
    assert chunks
    good.close()
