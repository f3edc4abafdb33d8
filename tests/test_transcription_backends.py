"""Transcription backends: one contract every backend honours, then what each backend does of its own.

:class:`TranscriptionBackendContract` holds what the stream code relies on.
Each backend has a subclass that provides the fixtures ``backend`` (a working
backend), ``say`` (``await say(session)`` makes the backend produce one final
transcript on a connected session) and ``failing_backend`` (one whose sessions
cannot connect), the last two when the backend has them. Discard and locmem
run as they are, OpenAI Realtime and Deepgram against the fake vendors in
``tests/vendors_stt``, and Whisper with the real tiny.en model.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import re
import time

import pytest
import pytest_asyncio

from mediastream.backends import InvalidBackendError, backends, load_backend
from mediastream.transcription.base import BaseTranscriptionBackend, BaseTranscriptionSession
from mediastream.transcription.deepgram import DeepgramBackend
from mediastream.transcription.discard import DiscardBackend
from mediastream.transcription.locmem import LocmemBackend
from mediastream.transcription.openai import OpenAIRealtimeBackend
from mediastream.transcription.websocket import SessionState, TranscriptionError
from mediastream.vad import SpeechStarted
from tests import audio_fixtures as af
from tests.support import requires_speech
from tests.vendors_stt.deepgram import FakeDeepgram
from tests.vendors_stt.listener import RecordingListener
from tests.vendors_stt.openai_realtime import FakeOpenAIRealtime

FAST = {"CONNECT_TIMEOUT": 2.0, "CLOSE_TIMEOUT": 1.0, "RECONNECT_DELAY": 0.02}
SENTENCE = "Please book a table for two people tomorrow."


def session_for(backend, rec: RecordingListener):
    return backend.create_session(stream_sid="MZ1", call_sid="CA1", listener=rec.listener)


# --- the contract ----------------------------------------------------------------------------------


class TranscriptionBackendContract:
    """What the stream code relies on from every transcription backend; subclassed once per backend."""

    @pytest.fixture
    def say(self):
        pytest.skip(f"{type(self).__name__} never produces a transcript")

    @pytest.fixture
    def failing_backend(self):
        pytest.skip(f"{type(self).__name__} has no provider that can fail")

    async def test_declares_what_the_stream_code_reads(self, backend):
        assert isinstance(backend, BaseTranscriptionBackend)
        assert type(backend.produces_transcripts) is bool
        session = session_for(backend, RecordingListener())
        assert isinstance(session, BaseTranscriptionSession)
        assert (session.stream_sid, session.call_sid) == ("MZ1", "CA1")
        assert type(session.runs_vad) is bool and session.on_vad_event is None
        if session.runs_vad:
            assert isinstance(session.speech_offset_ms, int)
        else:
            assert session.speech_offset_ms is None
        await session.close()

    async def test_create_connect_send_close(self, backend):
        rec = RecordingListener()
        session = session_for(backend, rec)
        await session.connect()
        for frame in af.frames(af.silence(1000)):
            session.send_audio(frame)
        await session.close()
        await session.close()  # safe twice
        session.send_audio(af.silence(20))  # after close: ignored, never raises
        assert rec.errors == []

    async def test_finals_reach_the_listener(self, backend, say):
        assert backend.produces_transcripts
        rec = RecordingListener()
        session = session_for(backend, rec)
        await session.connect()
        await say(session)
        (final,) = await rec.wait_count("final", timeout=20)
        text, start_ms, end_ms = final
        assert isinstance(text, str) and text.strip()
        assert start_ms is None or isinstance(start_ms, int)
        assert end_ms is None or isinstance(end_ms, int)
        await session.close()
        assert rec.errors == []

    async def test_close_without_connect(self, backend):
        rec = RecordingListener()
        session = session_for(backend, rec)
        session.send_audio(af.silence(20))
        await session.close()
        await session.close()
        assert rec.finals == []

    async def test_send_audio_never_blocks(self, backend):
        rec = RecordingListener()
        session = session_for(backend, rec)
        assert not inspect.iscoroutinefunction(session.send_audio)
        frames = af.frames(af.silence(5000))

        def feed() -> float:
            started = time.perf_counter()
            for frame in frames:
                assert session.send_audio(frame) is None
            session.send_audio(b"")
            return time.perf_counter() - started

        assert feed() < 1.0  # before connect: queued, cut or dropped, at once (5 s of audio)
        await session.connect()
        assert feed() < 1.0
        await session.close()

    async def test_a_session_that_cannot_connect_raises_from_connect(self, failing_backend):
        rec = RecordingListener()
        session = session_for(failing_backend, rec)
        with pytest.raises(Exception):
            await session.connect()
        session.send_audio(af.silence(20))  # the stream may still feed it: never raises
        await session.close()

    async def test_a_session_that_runs_the_vad_hands_over_its_events(self, backend, say):
        session = session_for(backend, RecordingListener())
        if not session.runs_vad:
            await session.close()
            pytest.skip(f"{type(session).__name__} runs no VAD")
        events = []
        session.on_vad_event = events.append
        await session.connect()
        await say(session)
        assert any(isinstance(event, SpeechStarted) for event in events)
        assert session.speech_offset_ms > 0
        await session.close()

    async def test_close_is_idempotent_and_the_backend_stays_usable(self, backend):
        backend.close()
        backend.close()
        await backend.aclose()
        await backend.aclose()
        session = session_for(backend, RecordingListener())
        await session.connect()
        await session.close()


# --- OpenAI Realtime ------------------------------------------------------------------------------------


class TestOpenAIRealtimeBackend(TranscriptionBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def server(self):
        async with FakeOpenAIRealtime() as server:
            yield server

    @pytest.fixture
    def backend(self, server):
        return OpenAIRealtimeBackend(API_KEY="sk-test", URL=server.url, **FAST)

    @pytest.fixture
    def say(self, server):
        async def say(session):
            await server.completed("hello there")

        return say

    @pytest_asyncio.fixture
    async def failing_backend(self):
        async with FakeOpenAIRealtime(reject_with="Invalid model") as server:
            yield OpenAIRealtimeBackend(API_KEY="k", URL=server.url, **FAST)

    async def test_configures_a_pcmu_transcription_session_and_streams_base64_audio(self):
        rec = RecordingListener()
        async with FakeOpenAIRealtime() as server:
            backend = OpenAIRealtimeBackend(
                API_KEY="sk-test", URL=server.url, LANGUAGE="en", PROMPT="Restaurant bookings", **FAST
            )
            session = session_for(backend, rec)
            session.send_audio(b"\xff" * 160)  # before ready: queued
            await session.connect()
            conn = server.connection
            assert conn.path == "/v1/realtime" and conn.query == {"intent": "transcription"}
            assert conn.headers["authorization"] == "Bearer sk-test"
            assert conn.json[0] == {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcmu"},
                            "transcription": {
                                "model": "gpt-4o-transcribe",
                                "language": "en",
                                "prompt": "Restaurant bookings",
                            },
                            "turn_detection": {
                                "type": "server_vad",
                                "threshold": 0.5,
                                "prefix_padding_ms": 300,
                                "silence_duration_ms": 800,
                            },
                        }
                    },
                },
            }
            session.send_audio(bytes(range(256)))
            await server.wait_for(lambda: len(FakeOpenAIRealtime.audio(conn)) == 160 + 256)
            assert FakeOpenAIRealtime.audio(conn) == b"\xff" * 160 + bytes(range(256))
            append = conn.of_type("input_audio_buffer.append")[1]
            assert set(append) == {"type", "audio"} and base64.b64decode(append["audio"]) == bytes(range(256))
            await session.close()
            assert session.state is SessionState.CLOSED

    async def test_events_map_to_listener_callbacks(self):
        rec = RecordingListener()
        async with FakeOpenAIRealtime() as server:
            session = session_for(OpenAIRealtimeBackend(API_KEY="k", URL=server.url, **FAST), rec)
            await session.connect()
            await server.speech_started("item_1", audio_start_ms=120)
            await server.delta("hel")
            await server.delta("lo")
            await server.speech_stopped("item_1", audio_end_ms=900)
            await server.completed("hello there")
            await rec.wait_count("final")
            assert rec.events == [
                ("speech_started", None),
                ("partial", "hel"),
                ("partial", "hello"),
                ("final", ("hello there", 120, 900)),
            ]
            # The next item starts from empty partial text.
            await server.delta("again", item_id="item_2")
            await server.send(FakeOpenAIRealtime.error_event("Input audio buffer is empty", "buffer_empty"))
            await rec.wait_count("error")
            assert rec.partials[-1] == "again"
            assert str(rec.errors[0]) == (
                "OpenAI Realtime error: Input audio buffer is empty (invalid_request_error, buffer_empty)"
            )
            await session.close()

    async def test_session_rejected_before_ready_fails_connect(self, failing_backend):
        session = session_for(failing_backend, RecordingListener())
        with pytest.raises(TranscriptionError, match=r"^OpenAI Realtime error: Invalid model"):
            await session.connect()
        await session.close()

    async def test_without_an_api_key_opens_nothing(self, monkeypatch):
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        rec = RecordingListener()
        async with FakeOpenAIRealtime() as server:
            session = session_for(OpenAIRealtimeBackend(URL=server.url, **FAST), rec)
            with pytest.raises(TranscriptionError, match="OPENAI_API_KEY"):
                await session.connect()
            assert server.attempts == []
            monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
            session = session_for(OpenAIRealtimeBackend(URL=server.url, **FAST), rec)
            await session.connect()
            assert server.connection.headers["authorization"] == "Bearer sk-from-env"
            await session.close()


# --- Deepgram -------------------------------------------------------------------------------------------


class TestDeepgramBackend(TranscriptionBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def server(self):
        async with FakeDeepgram() as server:
            yield server

    @pytest.fixture
    def backend(self, server):
        return DeepgramBackend(API_KEY="dg-test", URL=server.url, **FAST)

    @pytest.fixture
    def say(self, server):
        async def say(session):
            await server.results("hello there", is_final=True, speech_final=True, start=0.0, duration=0.5)

        return say

    @pytest_asyncio.fixture
    async def failing_backend(self):
        async with FakeDeepgram(refuse_status=401) as server:
            yield DeepgramBackend(API_KEY="bad", URL=server.url, **FAST)

    async def test_query_auth_and_binary_audio(self, server, backend):
        rec = RecordingListener()
        session = session_for(backend, rec)
        await session.connect()  # ready on open
        conn = server.connection
        assert conn.path == "/v1/listen"
        assert conn.query == {
            "encoding": "mulaw",
            "sample_rate": "8000",
            "channels": "1",
            "interim_results": "true",
            "vad_events": "true",
            "endpointing": "800",
            "model": "nova-3",
            "language": "en",
            "utterance_end_ms": "1000",
        }
        assert conn.headers["authorization"] == "Token dg-test"
        for frame in af.frames(bytes(range(256)) * 2):
            session.send_audio(frame)
        await server.wait_for(lambda: len(FakeDeepgram.audio(conn)) == 512)
        assert FakeDeepgram.audio(conn) == bytes(range(256)) * 2
        assert [len(b) for b in conn.binary] == [160, 160, 160, 32]
        await session.close()
        assert conn.of_type("CloseStream") == [{"type": "CloseStream"}]
        assert session.state is SessionState.CLOSED

    async def test_results_map_to_partials_finals_and_speech_start(self, server):
        rec = RecordingListener()
        session = session_for(DeepgramBackend(API_KEY="k", URL=server.url, **FAST), rec)
        await session.connect()
        await server.speech_started(timestamp=0.5)
        await server.results("book a", start=0.5, duration=0.6)
        await server.results("book a table", is_final=True, start=0.5, duration=1.0)
        await server.results("for two", start=1.5, duration=0.5)
        await server.results("for two people", is_final=True, speech_final=True, start=1.5, duration=0.9)
        await rec.wait_count("final")
        assert rec.events == [
            ("speech_started", None),
            ("partial", "book a"),
            ("partial", "book a table"),
            ("partial", "book a table for two"),
            ("final", ("book a table for two people", 500, 2400)),
        ]
        # A segment finalised without speech_final is flushed by UtteranceEnd.
        await server.results("thanks", is_final=True, start=3.0, duration=0.4)
        await server.results("", is_final=True, start=3.4, duration=0.5)  # silence: nothing
        await server.utterance_end(last_word_end=3.4)
        await rec.wait_count("final", 2)
        assert rec.finals[-1] == ("thanks", 3000, 3400)
        await server.send({"type": "Error", "description": "bad audio", "err_code": "DATA-0000"})
        (error,) = await rec.wait_count("error")
        assert str(error) == "Deepgram error: bad audio (DATA-0000)"
        await session.close()

    async def test_close_stream_flushes_results_before_close_returns(self):
        rec = RecordingListener()

        class Flushing(FakeDeepgram):
            async def on_message(self, conn, message):
                if message == '{"type":"CloseStream"}':
                    await self.results("goodbye", is_final=True, speech_final=True, start=0, duration=0.5)
                await super().on_message(conn, message)

        async with Flushing() as server:
            session = session_for(DeepgramBackend(API_KEY="k", URL=server.url, **FAST), rec)
            await session.connect()
            await session.close()
            assert rec.finals == [("goodbye", 0, 500)]

    async def test_sends_keepalive_while_no_audio_flows(self, server):
        rec = RecordingListener()
        session = session_for(DeepgramBackend(API_KEY="k", URL=server.url, **FAST), rec)
        session.keepalive_interval = 0.05
        await session.connect()
        conn = server.connection
        await server.wait_for(lambda: len(conn.of_type("KeepAlive")) >= 2)
        assert conn.of_type("KeepAlive")[0] == {"type": "KeepAlive"}
        await session.close()

    async def test_http_401_fails_connect(self, failing_backend):
        session = session_for(failing_backend, RecordingListener())
        with pytest.raises(TranscriptionError, match="^Deepgram refused the connection: HTTP 401$"):
            await session.connect()


# --- Discard and locmem ---------------------------------------------------------------------------------


class TestDiscardBackend(TranscriptionBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def backend(self):
        return DiscardBackend()

    async def test_accepts_and_drops_audio(self, backend):
        rec = RecordingListener()
        assert not backend.produces_transcripts  # the VAD alone ends a caller's utterance
        session = session_for(backend, rec)
        await session.connect()
        session.send_audio(b"\xff" * 160)
        await session.close()
        await session.close()
        session.send_audio(b"\xff" * 160)
        assert session.received_bytes == 160 and rec.events == []


class TestLocmemBackend(TranscriptionBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def backend(self):
        return LocmemBackend()

    @pytest.fixture
    def say(self):
        async def say(session):
            session.emit_final("hello there", 0, 500)

        return say

    @pytest.fixture
    def failing_backend(self):
        return LocmemBackend(FAIL_CONNECT="no provider")

    async def test_records_audio_and_lets_tests_speak(self):
        rec = RecordingListener()
        backend = LocmemBackend(HOLD_CONNECT=True)
        session = session_for(backend, rec)
        assert backend.sessions == [session]
        connecting = asyncio.create_task(session.connect())
        await session.wait_connect_called()
        session.send_audio(b"hello")
        assert not connecting.done()
        session.release_connect()
        await connecting
        assert await session.wait_for_audio(5) == b"hello"
        session.emit_speech_started()
        session.emit_partial("hel")
        session.emit_final("hello", 0, 500)
        assert rec.events == [("speech_started", None), ("partial", "hel"), ("final", ("hello", 0, 500))]
        await session.close()
        assert session.close_calls == 1 and session.closed
        failing = session_for(LocmemBackend(FAIL_CONNECT="no provider"), rec)
        with pytest.raises(ConnectionError, match="no provider"):
            await failing.connect()


def test_the_test_settings_select_the_discard_backend():
    assert isinstance(backends.transcription, DiscardBackend)


def test_backends_load_from_settings_and_reject_unknown_options():
    backend = load_backend(
        "TRANSCRIPTION",
        {"BACKEND": "mediastream.transcription.deepgram.DeepgramBackend", "OPTIONS": {"MODEL": "nova-2"}},
    )
    assert backend.config["model"] == "nova-2"
    with pytest.raises(InvalidBackendError, match="OpenAIRealtimeBackend"):
        load_backend(
            "TRANSCRIPTION",
            {"BACKEND": "mediastream.transcription.openai.OpenAIRealtimeBackend", "OPTIONS": {"VOICE": "x"}},
        )


# --- Whisper (the real tiny.en model, no mocks) --------------------------------------------------------


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@requires_speech
class TestWhisperBackend(TranscriptionBackendContract):
    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def backend(self):
        from mediastream.transcription.whisper import WhisperBackend

        return WhisperBackend()

    @pytest.fixture
    def say(self):
        clip = af.speech_clip(SENTENCE)

        async def say(session):
            for frame in clip.frames():
                session.send_audio(frame)
                await asyncio.sleep(0)  # let call_soon callbacks run, as a stream's loop would

        return say

    @pytest.fixture
    def failing_backend(self, tmp_path):
        from mediastream.transcription.whisper import WhisperBackend

        return WhisperBackend(MODEL_PATH=tmp_path)  # no model.bin there

    async def test_transcribes_a_spoken_sentence(self, backend):
        clip = af.speech_clip(SENTENCE)
        rec = RecordingListener()
        session = session_for(backend, rec)
        await session.connect()
        frames = clip.frames()
        for frame in frames:
            session.send_audio(frame)
            await asyncio.sleep(0)  # let call_soon callbacks run, as a consumer's loop would
        fed_at = time.perf_counter()  # the VAD's end decision happened inside this feed
        (final,) = await rec.wait_count("final", timeout=20)
        latency = time.perf_counter() - fed_at
        text, start_ms, end_ms = final
        assert {"book", "table", "tomorrow"} <= words(text), text
        assert words(text) & {"two", "2"}, text
        assert rec.events[0] == ("speech_started", None) and rec.speech_starts == 1
        assert abs(start_ms - clip.onset_ms) <= 100 and abs(end_ms - clip.end_ms) <= 200
        print(f"whisper final {latency * 1000:.0f} ms after the end of the feed: {text!r}")
        await session.close()
        assert rec.errors == []

    async def test_close_transcribes_an_unfinished_utterance(self, backend):
        clip = af.speech_clip(SENTENCE, tail_ms=0)
        rec = RecordingListener()
        session = session_for(backend, rec)
        await session.connect()
        for frame in clip.frames():
            session.send_audio(frame)
        await session.close()  # the caller hung up mid-utterance: still transcribed
        assert len(rec.finals) == 1 and "table" in words(rec.finals[0][0])
        session.send_audio(clip.mulaw)  # after close: ignored
        await session.close()
        assert len(rec.finals) == 1

    async def test_caps_long_utterances(self):
        from mediastream.transcription.whisper import WhisperBackend

        clip = af.speech_clip(SENTENCE, lead_ms=200, tail_ms=1000)
        rec = RecordingListener()
        session = session_for(WhisperBackend(MAX_UTTERANCE_SECONDS=1.0), rec)
        await session.connect()
        for frame in clip.frames():
            session.send_audio(frame)
        await rec.wait_count("final", 2, timeout=20)
        await session.close()
        assert rec.speech_starts == 1  # one utterance, transcribed in pieces
        assert rec.finals[0][2] - rec.finals[0][1] == pytest.approx(1000, abs=300)

    async def test_a_missing_model_fails_connect_with_a_clear_error(self, failing_backend):
        from mediastream.transcription.whisper import WhisperError

        session = session_for(failing_backend, RecordingListener())
        with pytest.raises(WhisperError, match="No CTranslate2 Whisper model"):
            await session.connect()


# --- Whisper through the host's speech pool (a real manage.py speech_pool process) ------------------


@requires_speech
class TestWhisperPoolBackend(TestWhisperBackend):
    """The whole Whisper suite again, with the model in a speech pool process instead of this one."""

    @pytest.fixture(scope="class")
    @classmethod
    def pool(cls, tmp_path_factory):
        from tests.speechpool_support import running_pool

        yield from running_pool(tmp_path_factory, "--no-tts", "--stt-workers", "2")

    @pytest.fixture
    def backend(self, pool):
        from mediastream.transcription.whisper import WhisperBackend

        return WhisperBackend(POOL=pool.socket_path)

    @pytest.fixture
    def failing_backend(self, tmp_path):
        from mediastream.transcription.whisper import WhisperBackend

        return WhisperBackend(POOL=tmp_path / "no-pool.sock")

    async def test_caps_long_utterances(self, pool):
        from mediastream.transcription.whisper import WhisperBackend

        clip = af.speech_clip(SENTENCE, lead_ms=200, tail_ms=1000)
        rec = RecordingListener()
        session = session_for(WhisperBackend(MAX_UTTERANCE_SECONDS=1.0, POOL=pool.socket_path), rec)
        await session.connect()
        for frame in clip.frames():
            session.send_audio(frame)
        await rec.wait_count("final", 2, timeout=20)
        await session.close()
        assert rec.speech_starts == 1
        assert rec.finals[0][2] - rec.finals[0][1] == pytest.approx(1000, abs=300)

    async def test_a_missing_model_fails_connect_with_a_clear_error(self, failing_backend):
        from mediastream.transcription.whisper import WhisperError

        session = session_for(failing_backend, RecordingListener())
        with pytest.raises(WhisperError, match=re.escape('MEDIASTREAM["TRANSCRIPTION"]["OPTIONS"]["POOL"]')):
            await session.connect()

    async def test_utterances_are_transcribed_by_the_pool(self, pool, backend, say):
        from mediastream.speechpool.client import client_for

        stats = client_for(pool.socket_path, "stats")
        before = (await stats.stats()).get("transcribe", 0)
        rec = RecordingListener()
        session = session_for(backend, rec)
        await session.connect()
        await say(session)
        await rec.wait_count("final", timeout=20)
        await session.close()
        assert (await stats.stats())["transcribe"] > before  # the pool's model did the work

    async def test_a_pool_serving_another_model_is_refused_by_name(self, pool):
        from mediastream.transcription.whisper import WhisperBackend, WhisperError

        session = session_for(WhisperBackend(MODEL="tiny.en", POOL=pool.socket_path), RecordingListener())
        with pytest.raises(WhisperError, match="serves Whisper base, this backend's MODEL is tiny.en"):
            await session.connect()
