"""``mediastream.backends.backends``: lazy, reset with the settings, closing what it built."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mediastream import startup
from mediastream.backends import Backend, BackendHandler, BackendKind, InvalidBackendError, backends
from mediastream.transcription.base import BaseTranscriptionBackend
from mediastream.transcription.discard import DiscardBackend
from mediastream.tts.base import AudioChunk, BaseTTSBackend
from mediastream.tts.dummy import SilenceBackend
from tests.support import mediastream_settings, requires_speech

HERE = __name__


class RecordingTTS(BaseTTSBackend):
    """Counts how often it is built, warmed up and closed (class-wide, as the handler builds it)."""

    built = 0
    build_delay = 0.0
    instances: list[RecordingTTS] = []

    def __init__(self, *, FAIL_CLOSE: bool = False) -> None:
        super().__init__()
        time.sleep(type(self).build_delay)
        type(self).built += 1
        type(self).instances.append(self)
        self.fail_close = FAIL_CLOSE
        self.closes = 0
        self.acloses = 0
        self.warm_ups = 0

    async def synthesize(self, text: str):
        yield AudioChunk(b"\xff" * 160, "mulaw", 8000)

    async def warm_up(self) -> None:
        self.warm_ups += 1

    def close(self) -> None:
        self.closes += 1
        if self.fail_close:
            raise RuntimeError("close failed")

    async def aclose(self) -> None:
        self.acloses += 1


class RecordingTranscription(DiscardBackend):
    def __init__(self) -> None:
        super().__init__()
        self.closes = 0
        self.warm_ups = 0

    async def warm_up(self) -> None:
        self.warm_ups += 1

    def close(self) -> None:
        self.closes += 1


RECORDING_TTS = {"BACKEND": f"{HERE}.RecordingTTS", "OPTIONS": {}}
RECORDING_STT = {"BACKEND": f"{HERE}.RecordingTranscription", "OPTIONS": {}}


@pytest.fixture(autouse=True)
def _fresh():
    RecordingTTS.built, RecordingTTS.build_delay, RecordingTTS.instances = 0, 0.0, []
    backends.reset()
    yield
    backends.reset()


def test_backends_are_built_on_first_use_once():
    with mediastream_settings(TTS=RECORDING_TTS):
        assert backends.all() == [] and RecordingTTS.built == 0
        tts = backends.tts
        assert isinstance(tts, RecordingTTS) and RecordingTTS.built == 1
        assert backends.tts is tts and RecordingTTS.built == 1
        assert backends.all() == [tts]  # the transcription backend is still unbuilt
        assert isinstance(backends.transcription, DiscardBackend)
        assert backends.all() == [tts, backends.transcription]


def test_threads_racing_for_a_backend_build_it_once():
    RecordingTTS.build_delay = 0.05
    with mediastream_settings(TTS=RECORDING_TTS):
        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(lambda _: backends.tts, range(8)))
    assert RecordingTTS.built == 1 and all(tts is seen[0] for tts in seen)


def test_override_settings_resets_and_closes_what_was_built():
    with mediastream_settings(TTS=RECORDING_TTS):
        outer = backends.tts
        with mediastream_settings(TTS={**RECORDING_TTS, "OPTIONS": {"FAIL_CLOSE": False}}):
            assert outer.closes == 1  # dropped when the settings changed
            inner = backends.tts
            assert inner is not outer
        assert inner.closes == 1
        assert backends.tts is not inner and RecordingTTS.built == 3
    assert isinstance(backends.tts, SilenceBackend)


def test_other_settings_changing_keep_the_backends():
    from django.test import override_settings

    tts = backends.tts
    with override_settings(USE_TZ=False):
        assert backends.tts is tts


def test_close_all_closes_every_built_backend_and_keeps_it(caplog):
    failing_tts = {**RECORDING_TTS, "OPTIONS": {"FAIL_CLOSE": True}}
    with mediastream_settings(TTS=failing_tts, TRANSCRIPTION=RECORDING_STT):
        tts, stt = backends.tts, backends.transcription
        backends.close_all()  # the TTS close raises: logged, and the next backend is still closed
        assert (tts.closes, stt.closes) == (1, 1)
        assert "Closing the RecordingTTS backend failed" in caplog.text
        assert backends.tts is tts and backends.transcription is stt
        backends.close_all()
        assert (tts.closes, stt.closes) == (2, 2)


@pytest.mark.asyncio
async def test_aclose_all_awaits_every_built_backend():
    with mediastream_settings(TTS=RECORDING_TTS, TRANSCRIPTION=RECORDING_STT):
        tts, stt = backends.tts, backends.transcription
        await backends.aclose_all()
        assert tts.acloses == 1 and tts.closes == 0
        assert stt.closes == 1  # the base aclose() is close()


def test_reset_drops_and_closes():
    with mediastream_settings(TTS=RECORDING_TTS):
        tts = backends.tts
        backends.reset()
        assert tts.closes == 1 and backends.all() == []
        assert backends.tts is not tts


@pytest.mark.parametrize(
    "config, message",
    [
        ("mediastream.tts.dummy.SilenceBackend", r'MEDIASTREAM\["TTS"\] must be a dict with a "BACKEND"'),
        ({"OPTIONS": {}}, r'MEDIASTREAM\["TTS"\] must be a dict with a "BACKEND"'),
        ({"BACKEND": "mediastream.tts.nope.Missing"}, r'Could not import .* MEDIASTREAM\["TTS"\]\["BACKEND"\]'),
        (
            {"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {"VOICE": "x"}},
            r'Bad OPTIONS .* MEDIASTREAM\["TTS"\]',
        ),
        (
            {"BACKEND": "mediastream.transcription.discard.DiscardBackend"},
            r'MEDIASTREAM\["TTS"\]\["BACKEND"\] is not a subclass of mediastream.tts.base.BaseTTSBackend',
        ),
    ],
)
def test_errors_name_the_setting(config, message):
    with mediastream_settings(TTS=config):
        with pytest.raises(InvalidBackendError, match=message):
            backends.tts
        assert backends.all() == []


def test_an_optional_kind_is_one_line_and_none_when_unset():
    class WithAgent(BackendHandler):
        agent: BackendKind[Backend | None] = BackendKind("AGENT", "mediastream.backends.Backend", optional=True)

    handler = WithAgent()
    assert [kind.name for kind in WithAgent.kinds()] == ["transcription", "tts", "agent"]
    assert handler.agent is None and handler.all() == []
    with mediastream_settings(AGENT=RECORDING_TTS):
        agent = handler.agent
        assert isinstance(agent, RecordingTTS) and handler.agent is agent
        handler.reset()
        assert agent.closes == 1


def test_the_required_kinds_check_their_base_classes():
    assert [kind.name for kind in BackendHandler.kinds()] == ["transcription", "tts", "agent"]
    assert isinstance(backends.tts, BaseTTSBackend)
    assert isinstance(backends.transcription, BaseTranscriptionBackend)
    assert BackendHandler.tts.setting == "TTS" and not BackendHandler.tts.optional


@pytest.mark.asyncio
async def test_startup_warms_up_every_kind():
    with mediastream_settings(TTS=RECORDING_TTS, TRANSCRIPTION=RECORDING_STT):
        await startup._warm_up()
        assert backends.tts.warm_ups == 1 and backends.transcription.warm_ups == 1


@pytest.mark.asyncio
async def test_startup_warm_up_failure_is_logged_and_the_rest_still_warms(caplog):
    with mediastream_settings(TTS=RECORDING_TTS, TRANSCRIPTION={"BACKEND": "nope.Missing"}):
        await startup._warm_up()
        assert backends.tts.warm_ups == 1
    assert "Warming up the transcription backend failed" in caplog.text


# --- closing a real Piper worker ------------------------------------------------------------------------

PIPER = {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}}


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def gone(pid: int, timeout: float = 5.0) -> bool:
    """The process exited and was reaped (asyncio's child watcher reaps it)."""
    deadline = time.monotonic() + timeout
    while process_exists(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def piper_worker_pid() -> int:
    await backends.tts.warm_up()
    pid = backends.tts._worker.process.pid
    assert process_exists(pid)
    return pid


@requires_speech
@pytest.mark.asyncio
async def test_close_all_stops_a_piper_worker():
    with mediastream_settings(TTS=PIPER):
        pid = await piper_worker_pid()
        backends.close_all()
        assert await gone(pid)
        assert [chunk async for chunk in backends.tts.synthesize("Back again.")]  # a new worker
        pid = backends.tts._worker.process.pid
    assert await gone(pid)  # the settings changed back: the dropped backend was closed


@requires_speech
@pytest.mark.asyncio
async def test_aclose_all_stops_a_piper_worker():
    with mediastream_settings(TTS=PIPER):
        pid = await piper_worker_pid()
        await backends.aclose_all()
        assert not process_exists(pid) or await gone(pid)


@requires_speech
def test_close_all_from_outside_the_loop_stops_a_piper_worker():
    """As at process exit (``atexit``): the loop that started the worker is not running."""
    loop = asyncio.new_event_loop()
    try:
        with mediastream_settings(TTS=PIPER):
            pid = loop.run_until_complete(piper_worker_pid())
            backends.close_all()
            assert loop.run_until_complete(gone(pid))
    finally:
        loop.run_until_complete(asyncio.sleep(0.05))  # the worker's pipes see EOF and close
        loop.close()


EXIT_SCRIPT = """
import atexit, os
seen = []
atexit.register(lambda: print("closes", seen[0].closes))  # last registered runs first: after the handler
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
from django.conf import settings
from django.test import override_settings
from mediastream.backends import backends
tts = {"BACKEND": "tests.test_backend_handler.RecordingTTS"}
override_settings(MEDIASTREAM={**settings.MEDIASTREAM, "TTS": tts}).enable()
seen.append(backends.tts)
"""


def test_the_handler_closes_its_backends_at_exit():
    result = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closes 1"
