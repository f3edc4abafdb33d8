"""Optional end-of-turn model: has the caller finished, or only paused mid-sentence?

A VAD hears silence; it cannot tell "my number is ... five five five ..." from
a finished sentence. Smart Turn v3.2 (BSD-2, by Daily, an 8 MB ONNX model that
ships inside the ``pipecat-ai`` wheel) listens to the last 8 s of the caller's
audio (intonation, the words' shape) and says whether the turn is complete.

* :class:`EndOfTurn` is pure: ``is_complete(pcm16k) -> (complete, probability)``
  on 16 kHz float audio of the caller's turn so far (:func:`pcm16k_from_mulaw`
  turns the stream's 8 kHz mu-law into that). It runs the model in ONNX Runtime
  on one thread (about 40-60 ms per call on these 2-core machines) and is safe
  to call from several threads; call it off the event loop.
* The model is never downloaded at run time: ``bin/setup`` fetches the pinned
  wheel by hash and extracts the one file (``python -m mediastream.endofturn
  install WHEEL``) into :func:`models_dir`; loading checks its SHA-256.
* ``MEDIASTREAM["END_OF_TURN"]`` chooses the rule the conversation engine uses
  when the VAD hears silence: ``{"MODEL": None}`` ends the turn after
  ``HANG_SECONDS`` of silence; ``{"MODEL": "smart-turn"}`` asks the model at
  the VAD's end of speech and ends the turn then when it says complete, else
  after ``FALLBACK_SECONDS`` of silence (for turns it misjudges); speech
  before that continues the turn. The stream session applies the rule
  (:class:`mediastream.turns.TurnEnd`); :class:`TurnAudio` keeps a stream's
  audio for the model and asks it off the event loop.
  :func:`end_of_turn_settings` gives the merged values, :func:`get_end_of_turn`
  the process-wide model (``None`` without one).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULTS",
    "EndOfTurn",
    "EndOfTurnError",
    "EndOfTurnSettings",
    "end_of_turn_settings",
    "get_end_of_turn",
    "install",
    "log_mel",
    "models_dir",
    "pcm16k_from_mulaw",
    "TurnAudio",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
#: SHA-256 of the ONNX file inside pipecat-ai 1.14.0 (itself installed by hash).
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
WHEEL_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
WHEEL = "pipecat-ai==1.14.0"

SAMPLE_RATE = 16000
WINDOW_SECONDS = 8
_N_FFT = 400
_HOP = 160
_N_MELS = 80

#: ``MEDIASTREAM["END_OF_TURN"]`` defaults (the figures behind them: bench/README.md, "End of turn").
DEFAULTS: dict[str, Any] = {
    # None (VAD silence only) or "smart-turn".
    "MODEL": None,
    # Silence that ends the turn (without a model; with one, a turn it calls complete). At most the VAD's
    # END_SILENCE_SECONDS: the turn ends with its final transcript; longer: it waits the difference.
    "HANG_SECONDS": 0.3,
    # With a model: silence after which a turn it calls incomplete ends anyway.
    "FALLBACK_SECONDS": 2.0,
    # The model's probability at or above which the turn is complete.
    "THRESHOLD": 0.5,
    # Where the extracted model lives; None: models_dir().
    "MODEL_PATH": None,
}


class EndOfTurnError(RuntimeError):
    """The end-of-turn model is missing, not the pinned one, or the settings are wrong."""


def models_dir() -> Path:
    """Where install() puts the model: ``$MEDIASTREAM_MODELS_DIR`` or ``<venv>/share/mediastream/models``."""
    return Path(os.environ.get("MEDIASTREAM_MODELS_DIR") or Path(sys.prefix) / "share" / "mediastream" / "models")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def install(wheel: str | os.PathLike[str], target: Path | None = None) -> Path:
    """Extract the pinned Smart Turn model from a downloaded pipecat-ai wheel; return its path."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(WHEEL_MEMBER)
        except KeyError:
            raise EndOfTurnError(f"{wheel} has no {WHEEL_MEMBER}: is it {WHEEL}?") from None
    if _sha256(data) != MODEL_SHA256:
        raise EndOfTurnError(f"{WHEEL_MEMBER} in {wheel} does not have the pinned SHA-256 {MODEL_SHA256[:16]}…")
    target = target or models_dir() / MODEL_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


# --- features: Whisper's log-mel spectrogram, in numpy ----------------------------------------------------


def _mel_filters() -> np.ndarray:
    """Slaney-scale triangular filters, area-normalised, shape (n_mels, n_fft // 2 + 1), as Whisper uses."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, dtype=np.float64)
        linear = 3.0 * hz / 200.0
        return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4), linear)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0), 200.0 * mel / 3.0)

    edges = to_hz(np.linspace(to_mel(0.0), to_mel(SAMPLE_RATE / 2), _N_MELS + 2))
    bins = np.linspace(0, SAMPLE_RATE / 2, _N_FFT // 2 + 1)
    lower = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


_FILTERS = _mel_filters()
_WINDOW = np.hanning(_N_FFT + 1)[:-1]  # periodic Hann


def log_mel(pcm16k: np.ndarray) -> np.ndarray:
    """The model's input: (80, 800) log-mel features of the last 8 s (zeros before shorter audio).

    The waveform is scaled to zero mean and unit variance first; frames are
    centred (reflect padding), 25 ms Hann windows every 10 ms; log10 power is
    clipped to 80 dB under its maximum and mapped to about [-1, 1].
    """
    samples = SAMPLE_RATE * WINDOW_SECONDS
    x = np.asarray(pcm16k, dtype=np.float32)[-samples:]
    x = np.concatenate([np.zeros(samples - len(x), dtype=np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2
    logs = np.log10(np.maximum(_FILTERS @ power.T, 1e-10))[:, :-1]
    logs = np.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32)


def pcm16k_from_mulaw(mulaw: bytes) -> np.ndarray:
    """8 kHz G.711 mu-law (a stream's audio) to 16 kHz float32 in [-1, 1] (soxr HQ)."""
    import soxr

    from .audio import ulaw_decode

    pcm = ulaw_decode(mulaw).astype(np.float32) * (1.0 / 32768.0)
    return soxr.resample(pcm, 8000, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


# --- the model --------------------------------------------------------------------------------------------


class EndOfTurn:
    """Smart Turn v3.2 over the caller's turn so far. Thread-safe; blocking (call off the event loop)."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise EndOfTurnError(f'MEDIASTREAM["END_OF_TURN"]["THRESHOLD"] must be in (0, 1), got {threshold!r}')
        path = Path(model_path) if model_path else models_dir() / MODEL_FILE
        if not path.is_file():
            raise EndOfTurnError(
                f"No Smart Turn model at {path}: run bin/setup, or pip download --no-deps {WHEEL} and "
                f"python -m mediastream.endofturn install <the .whl>"
            )
        data = path.read_bytes()
        if model_path is None and _sha256(data) != MODEL_SHA256:
            raise EndOfTurnError(f"{path} does not have the pinned SHA-256 {MODEL_SHA256[:16]}…; install it again")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        self.threshold = threshold

    def probability(self, pcm16k: np.ndarray) -> float:
        """How likely the turn is complete, from its last 8 s."""
        features = log_mel(pcm16k)[None]
        (logits,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(logits).reshape(-1)[0])  # the model ends in a sigmoid

    def is_complete(self, pcm16k: np.ndarray) -> tuple[bool, float]:
        p = self.probability(pcm16k)
        return p >= self.threshold, p


@dataclass(frozen=True, slots=True)
class EndOfTurnSettings:
    model: str | None
    hang_seconds: float
    fallback_seconds: float
    threshold: float
    model_path: str | None


def end_of_turn_settings() -> EndOfTurnSettings:
    """``MEDIASTREAM["END_OF_TURN"]`` over :data:`DEFAULTS`, checked."""
    from .conf import app_settings

    raw = app_settings.as_dict().get("END_OF_TURN") or {}
    merged = {**DEFAULTS, **raw}
    if merged["MODEL"] not in (None, "smart-turn"):
        raise EndOfTurnError(
            f'MEDIASTREAM["END_OF_TURN"]["MODEL"] must be None or "smart-turn", not {merged["MODEL"]!r}'
        )
    for key in ("HANG_SECONDS", "FALLBACK_SECONDS"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise EndOfTurnError(f'MEDIASTREAM["END_OF_TURN"]["{key}"] must be a number > 0, got {value!r}')
    return EndOfTurnSettings(
        model=merged["MODEL"],
        hang_seconds=float(merged["HANG_SECONDS"]),
        fallback_seconds=float(merged["FALLBACK_SECONDS"]),
        threshold=float(merged["THRESHOLD"]),
        model_path=merged["MODEL_PATH"],
    )


_loaded: dict[tuple[str | None, float], EndOfTurn] = {}
_lock = threading.Lock()


def get_end_of_turn() -> EndOfTurn | None:
    """The process-wide model the settings ask for (loaded once, blocking), or None for VAD silence only."""
    config = end_of_turn_settings()
    if config.model is None:
        return None
    key = (config.model_path, config.threshold)
    with _lock:
        if key not in _loaded:
            _loaded[key] = EndOfTurn(config.model_path, threshold=config.threshold)
        return _loaded[key]


class TurnAudio:
    """The caller's last :data:`WINDOW_SECONDS` of audio on one stream, and the model asked about it.

    The stream feeds every inbound frame (:meth:`feed`, cheap: a bytearray
    kept to 8 s); :meth:`check` runs the process-wide model on the audio since
    the held turn began, in a worker thread so the event loop never waits for
    ONNX (about 40-60 ms a call), one check at a time so answers come in order.
    A model that cannot load or run counts as "complete" (the VAD's silence
    rule decides) and is logged once per stream.
    """

    def __init__(self, stream_sid: str = "") -> None:
        import asyncio

        self.stream_sid = stream_sid
        self._audio = bytearray()
        self._received = 0  # bytes fed since the stream began (8 per ms)
        self._lock = asyncio.Lock()
        self._warned = False

    def feed(self, mulaw: bytes) -> None:
        self._audio += mulaw
        self._received += len(mulaw)
        excess = len(self._audio) - _KEEP_BYTES
        if excess > 4000:  # trim in blocks, not on every frame
            del self._audio[:excess]

    def since(self, start_ms: int | None) -> bytes:
        """The audio from stream ms ``start_ms`` (less a pre-roll) to now, at most the model's window."""
        keep = _KEEP_BYTES
        if start_ms is not None:
            keep = min(keep, max(0, self._received - max(0, start_ms - _PRE_ROLL_MS) * 8))
        return bytes(self._audio[-keep:]) if keep else b""

    async def check(self, start_ms: int | None) -> tuple[bool, float | None, float]:
        """(complete, probability, model ms) for the turn that began at ``start_ms``."""
        import asyncio
        import time

        audio = self.since(start_ms)
        async with self._lock:
            began = time.perf_counter()
            try:
                complete, probability = await asyncio.to_thread(_judge, audio)
            except Exception as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning("Stream %s: the end-of-turn model failed, using silence only: %s", self.stream_sid, exc)
                return True, None, 0.0
            return complete, probability, round((time.perf_counter() - began) * 1000, 1)


_KEEP_BYTES = WINDOW_SECONDS * 8000
_PRE_ROLL_MS = 300


def _judge(mulaw: bytes) -> tuple[bool, float]:
    model = get_end_of_turn()
    if model is None:
        return True, 1.0
    return model.is_complete(pcm16k_from_mulaw(mulaw))


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "install":
        print("usage: python -m mediastream.endofturn install PIPECAT_AI_WHEEL", file=sys.stderr)
        return 2
    print(install(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
