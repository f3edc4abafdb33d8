"""Audio formats for the phone line: G.711 mu-law at 8 kHz, 20 ms frames.

Everything that turns TTS output or audio files into what Twilio plays lives
here, with no I/O beyond reading and writing WAV files:

* the mu-law codec, a numpy lookup table bit-exact with CPython's ``audioop``
  (removed in Python 3.13): PCM16 1000 encodes to 0xCE, silence is 0xFF;
* :class:`Resampler`, a streaming soxr ``HQ`` resampler. Never ``ratecv``: it
  has no anti-alias filter, and a 5 kHz tone would alias into the phone band;
* :class:`MulawConverter`, which turns a TTS backend's ``AudioChunk`` stream
  into 8 kHz mu-law as it arrives;
* WAV reading (libsndfile, through soundfile) and writing;
* :func:`iter_frames`, cutting mu-law into the 20 ms frames Twilio expects.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import wave
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import numpy as np
import soundfile
import soxr

__all__ = [
    "SAMPLE_RATE",
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "SILENCE_BYTE",
    "SILENCE_FRAME",
    "AudioChunkLike",
    "AudioFormatError",
    "MulawConverter",
    "Resampler",
    "alaw_decode",
    "duration_seconds",
    "iter_frames",
    "mulaw_to_wav_bytes",
    "pcm16_to_mulaw",
    "read_wav",
    "to_mulaw",
    "ulaw_decode",
    "ulaw_encode",
    "wav_to_mulaw",
    "write_wav",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_SECONDS = FRAME_BYTES / SAMPLE_RATE
SILENCE_BYTE = 0xFF
SILENCE_FRAME = bytes([SILENCE_BYTE]) * FRAME_BYTES


class AudioFormatError(ValueError):
    """Audio that cannot be converted: not a WAV, an unsupported format, a bad rate."""


_BIAS = 0x84
_CLIP = 32635


def _build_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    values = np.where(sign != 0, _BIAS - magnitude, magnitude - _BIAS)
    return values.astype(np.int16)


def _build_encode_table() -> np.ndarray:
    # Index: the int16 sample viewed as uint16 (0..65535).
    samples = np.arange(65536, dtype=np.int32)
    samples = np.where(samples >= 32768, samples - 65536, samples)
    # CPython's audioop works on 14-bit magnitudes (Sun g711.c st_14linear2ulaw).
    pcm = samples >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    pcm = np.where(pcm < 0, -pcm, pcm)
    pcm = np.minimum(pcm, _CLIP >> 2) + (_BIAS >> 2)
    seg_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_ends, pcm, side="left")
    out = np.where(
        seg >= 8,
        0x7F ^ mask,
        ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask,
    )
    return (out & 0xFF).astype(np.uint8)


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    """Mu-law bytes to int16 samples."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: np.ndarray | bytes) -> bytes:
    """Int16 samples (array or little-endian bytes) to mu-law bytes."""
    if isinstance(samples, (bytes, bytearray, memoryview)):
        samples = np.frombuffer(samples, dtype="<i2")
    return _ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def _build_alaw_decode_table() -> np.ndarray:
    # Sun g711.c alaw2linear, as CPython's audioop.alaw2lin.
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    value = (codes & 0x0F) << 4
    seg = (codes & 0x70) >> 4
    value = np.where(
        seg == 0,
        value + 8,
        np.where(seg == 1, value + 0x108, (value + 0x108) << np.maximum(seg - 1, 0)),
    )
    return np.where(codes & 0x80, value, -value).astype(np.int16)


_ALAW_DECODE = _build_alaw_decode_table()
_EMPTY = np.zeros(0, dtype=np.int16)
_TO_FLOAT = np.float32(1 / 32768)


def alaw_decode(data: bytes) -> np.ndarray:
    """G.711 A-law bytes to int16 samples (for A-law WAV files)."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def _as_int16(samples: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    """A 1-D C-contiguous int16 view of samples given as an array or PCM16 LE bytes."""
    if isinstance(samples, (bytes, bytearray, memoryview)):
        if len(samples) % 2:
            raise AudioFormatError(f"PCM16 data has an odd length ({len(samples)} bytes)")
        return np.frombuffer(samples, dtype="<i2").astype(np.int16, copy=False)
    array = np.asarray(samples)
    if array.ndim != 1:
        raise AudioFormatError(f"expected mono (1-D) samples, got shape {array.shape}")
    if array.dtype != np.int16:
        if not np.issubdtype(array.dtype, np.integer):
            raise AudioFormatError(f"expected int16 samples, got {array.dtype}")
        array = np.clip(array, -32768, 32767)
    return np.ascontiguousarray(array, dtype=np.int16)


# --- Resampling ---------------------------------------------------------------


class Resampler:
    """Streaming sample-rate conversion of mono int16 audio with soxr ``HQ``.

    ``process()`` takes audio as it arrives and returns what the filter can
    already produce; ``flush()`` ends the utterance, returns the rest and
    leaves the resampler ready for the next one. Equal rates pass through.

    The edges are held rather than zero-padded: the stream is primed with
    copies of the first sample and flushed with copies of the last, and the
    output those pads produce is discarded exactly. A zero-padded sinc filter
    rings on the step at each end of an utterance (a click; a constant 1000
    would start at 660), whereas a held edge keeps a constant constant. Over a
    whole utterance the output has ``floor(n_in * out_rate / in_rate)`` samples.

    The filter runs in float32: soxr's int16 output path dithers, which makes
    the result depend on how the input was chunked. In float the stream gives
    the same samples however the audio is cut, and one rounding at the end.
    """

    # More than soxr HQ's filter reach (measured: ~30 output samples when
    # downsampling, ~70 when upsampling 8 -> 16 kHz), in input and output samples.
    _EDGE_SAMPLES = 96

    def __init__(self, in_rate: int, out_rate: int = SAMPLE_RATE, *, quality: str = "HQ") -> None:
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
                raise AudioFormatError(f"{name} must be a positive integer, got {rate!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        gcd = math.gcd(in_rate, out_rate)
        in_step, out_step = in_rate // gcd, out_rate // gcd
        # A whole number of rate periods, so discarding the pad's output keeps
        # output sample k exactly at input time k * in_rate / out_rate.
        periods = math.ceil(self._EDGE_SAMPLES / min(in_step, out_step))
        self._pad_in = periods * in_step
        self._pad_out = periods * out_step
        self._reset()

    @property
    def is_identity(self) -> bool:
        return self.in_rate == self.out_rate

    def _reset(self) -> None:
        self._stream: soxr.ResampleStream | None = None
        self._consumed = 0  # input samples of real audio
        self._emitted = 0  # output samples returned, pad output excluded
        self._discard = 0  # output samples still owed to the leading pad
        self._last = 0

    def process(self, samples: np.ndarray | bytes) -> np.ndarray:
        """Resample the next piece of the utterance; may return fewer samples than due yet."""
        x = _as_int16(samples)
        if self.is_identity or x.size == 0:
            return x
        if self._stream is None:
            self._stream = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality
            )
            self._discard = self._pad_out
            x = np.concatenate([np.full(self._pad_in, x[0], dtype=np.int16), x])
            self._consumed -= self._pad_in
        self._consumed += x.size
        self._last = int(x[-1])
        return self._take(self._stream.resample_chunk(x.astype(np.float32) * _TO_FLOAT))

    def flush(self) -> np.ndarray:
        """End the utterance: the remaining output, then a fresh state."""
        if self.is_identity or self._stream is None:
            self._reset()
            return _EMPTY
        tail = np.full(self._pad_in, self._last * _TO_FLOAT, dtype=np.float32)
        emitted_before = self._emitted
        out = self._take(self._stream.resample_chunk(tail, last=True))
        due = self._consumed * self.out_rate // self.in_rate
        out = out[: max(0, due - emitted_before)]
        self._reset()
        return out

    def _take(self, out: np.ndarray) -> np.ndarray:
        out = np.clip(np.rint(out * 32768.0), -32768, 32767).astype(np.int16)
        if self._discard:
            dropped = min(self._discard, out.size)
            out = out[dropped:]
            self._discard -= dropped
        self._emitted += out.size
        return out


# --- TTS output to phone audio ------------------------------------------------


class AudioChunkLike(Protocol):
    """What :class:`MulawConverter` reads: ``mediastream.tts.AudioChunk`` or lookalikes."""

    data: bytes
    encoding: str
    sample_rate: int


class _RawChunk:
    __slots__ = ("data", "encoding", "sample_rate")

    def __init__(self, data: bytes, encoding: str, sample_rate: int) -> None:
        self.data, self.encoding, self.sample_rate = data, encoding, sample_rate


class MulawConverter:
    """Turns a stream of TTS ``AudioChunk``s into 8 kHz mu-law, chunk by chunk.

    PCM16 LE at any rate is resampled (soxr HQ, state kept across chunks) and
    encoded; an odd trailing byte is kept for the next chunk, so vendors may
    cut their stream anywhere. 8 kHz mu-law passes through untouched. A rate
    or encoding change mid-stream flushes the old state first. Call
    ``flush()`` at the end of each utterance. One converter per stream: it is
    stateful and not shared between calls.
    """

    def __init__(self) -> None:
        self._resampler: Resampler | None = None
        self._odd = b""

    def feed(self, chunk: AudioChunkLike) -> bytes:
        """Mu-law for ``chunk`` (may be shorter than due until ``flush()``)."""
        encoding, rate, data = chunk.encoding, chunk.sample_rate, bytes(chunk.data)
        if encoding == "mulaw":
            if rate != SAMPLE_RATE:
                raise AudioFormatError(
                    f"mu-law audio must be {SAMPLE_RATE} Hz, got {rate} Hz; "
                    "send PCM16 (pcm_s16le) to have it resampled"
                )
            return self.flush() + data
        if encoding != "pcm_s16le":
            raise AudioFormatError(
                f"unsupported TTS audio encoding {encoding!r}: use 'pcm_s16le' or 'mulaw'"
            )
        prefix = b""
        if self._resampler is not None and self._resampler.in_rate != rate:
            prefix = self.flush()
        if self._resampler is None:
            self._resampler = Resampler(rate, SAMPLE_RATE)
        if self._odd:
            data = self._odd + data
        cut = len(data) & ~1
        self._odd = data[cut:]
        if not cut:
            return prefix
        return prefix + ulaw_encode(self._resampler.process(data[:cut]))

    def flush(self) -> bytes:
        """End of utterance: the mu-law still held in the resampler."""
        if self._odd:
            logger.debug("Dropping a trailing half PCM16 sample at the end of TTS audio")
            self._odd = b""
        if self._resampler is None:
            return b""
        out = self._resampler.flush()
        self._resampler = None
        return ulaw_encode(out) if out.size else b""


def pcm16_to_mulaw(pcm: np.ndarray | bytes, sample_rate: int) -> bytes:
    """One whole utterance of PCM16 (array or LE bytes) at ``sample_rate`` to 8 kHz mu-law."""
    resampler = Resampler(sample_rate, SAMPLE_RATE)
    head = resampler.process(pcm)
    tail = resampler.flush()
    return ulaw_encode(np.concatenate([head, tail]) if tail.size else head)


# --- WAV files ------------------------------------------------------------------
# libsndfile (through soundfile) parses and decodes WAV files. Two things it
# does not offer are done here from the file's chunk list: saying which chunk a
# refused file lacks, and handing back a mu-law payload without decoding it.

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_ALAW = 0x0006
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# Bytes 4..16 of every KSDATAFORMAT_SUBTYPE_* GUID; bytes 0..4 hold the format tag.
_GUID_SUFFIX = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FORMAT_NAMES = {
    _WAVE_FORMAT_PCM: "PCM",
    _WAVE_FORMAT_IEEE_FLOAT: "IEEE float",
    _WAVE_FORMAT_ALAW: "A-law",
    _WAVE_FORMAT_MULAW: "mu-law",
}
# libsndfile's names for the encodings above: PCM 8 (unsigned), 16, 24 and 32
# bit, IEEE float 32 and 64 bit, A-law and mu-law. It decodes more (ADPCM,
# GSM 6.10, ...); those are refused like an unknown format tag.
_READ_SUBTYPES = frozenset({"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ALAW", "ULAW"})
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})

WavSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


def _read_source(source: WavSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return handle.read()
    if hasattr(source, "read"):
        return bytes(source.read())
    raise TypeError(f"expected WAV bytes, a path or a binary file, got {type(source).__name__}")


def _chunks(data: bytes) -> dict[bytes, bytes]:
    """A RIFF file's top-level chunks by id (the first of each id).

    A chunk whose size runs past the end of the file (a WAV streamed to a pipe
    carries a placeholder size) holds what is there.
    """
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        chunks.setdefault(chunk_id, data[pos + 8 : pos + 8 + size])
        pos += 8 + size + (size & 1)
    return chunks


def _refusal(data: bytes, libsndfile_says: str) -> str:
    """Why a RIFF WAV cannot be read, named by its chunks (libsndfile's messages often do not)."""
    chunks = _chunks(data)
    fmt = chunks.get(b"fmt ")
    if fmt is None:
        return "WAV file has no 'fmt ' chunk"
    if b"data" not in chunks:
        return "WAV file has no 'data' chunk"
    if len(fmt) < 16:
        return "WAV 'fmt ' chunk is truncated"
    tag, channels, rate = struct.unpack_from("<HHI", fmt)
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            return "WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is truncated"
        (tag,) = struct.unpack_from("<I", fmt, 24)
        if fmt[28:40] != _GUID_SUFFIX or tag > 0xFFFF:
            return "unsupported WAVE_FORMAT_EXTENSIBLE sub-format GUID"
    if channels < 1 or rate < 1:
        return f"invalid WAV: {channels} channels at {rate} Hz"
    if tag not in _FORMAT_NAMES:
        return f"unsupported WAV format tag 0x{tag:04X}"
    return f"unsupported or malformed {_FORMAT_NAMES[tag]} WAV: {libsndfile_says}"


def _open_wav(data: bytes) -> soundfile.SoundFile:
    """``data`` opened by libsndfile, if it is a little-endian RIFF WAV in one of the encodings read here."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        if data[:4] in (b"RIFX", b"RF64"):
            raise AudioFormatError(f"{data[:4].decode()} WAV files are not supported")
        raise AudioFormatError("not a WAV file (no RIFF/WAVE header)")
    try:
        wav = soundfile.SoundFile(io.BytesIO(data))
    except soundfile.LibsndfileError as error:
        raise AudioFormatError(_refusal(data, error.error_string)) from None
    if wav.subtype not in _READ_SUBTYPES:
        wav.close()
        raise AudioFormatError(_refusal(data, f"{wav.subtype_info} is not read"))
    return wav


def _mono_int16(wav: soundfile.SoundFile) -> np.ndarray:
    """The samples as int16, channels averaged, rounded once."""
    if wav.subtype in _FLOAT_SUBTYPES:
        floats = wav.read(dtype="float64", always_2d=True)
        samples = np.nan_to_num(floats, nan=0.0, posinf=1.0, neginf=-1.0) * 32767.0
    else:
        # libsndfile hands integer and G.711 audio over left-aligned in 32 bits:
        # in int16 units that is a division, exact for 8 and 16 bit and G.711.
        samples = wav.read(dtype="int32", always_2d=True) / 65536.0
    mono = samples.mean(axis=1) if wav.channels > 1 else samples[:, 0]
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)


def read_wav(source: WavSource) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono int16 samples and their rate.

    ``source`` is the file's bytes, a path or a binary file object. PCM 8
    (unsigned), 16, 24 and 32 bit, IEEE float 32/64, mu-law, A-law and
    WAVE_FORMAT_EXTENSIBLE are read; channels are averaged to mono. Raises
    :class:`AudioFormatError` (a ``ValueError``) for anything else.
    """
    with _open_wav(_read_source(source)) as wav:
        return _mono_int16(wav), wav.samplerate


def wav_to_mulaw(source: WavSource) -> bytes:
    """A WAV file as raw 8 kHz mu-law (no header); 8 kHz mono mu-law is copied as is."""
    data = _read_source(source)
    with _open_wav(data) as wav:
        if wav.subtype == "ULAW" and wav.channels == 1 and wav.samplerate == SAMPLE_RATE:
            # Copied, not decoded: mu-law has two zeros (0x7F, 0xFF) that decode alike.
            return _chunks(data)[b"data"]
        return pcm16_to_mulaw(_mono_int16(wav), wav.samplerate)


def to_mulaw(
    audio: bytes | bytearray | memoryview | AudioChunkLike,
    *,
    encoding: str = "mulaw",
    sample_rate: int = SAMPLE_RATE,
) -> bytes:
    """Whatever a caller hands to "play this" as raw 8 kHz mu-law.

    An ``AudioChunk``-like object is converted per its own encoding and rate.
    Bytes starting with ``RIFF`` are read as a WAV file; other bytes are raw
    audio in ``encoding`` (``"mulaw"`` or ``"pcm_s16le"``) at ``sample_rate``,
    by default 8 kHz mu-law, i.e. already what Twilio plays.
    """
    if isinstance(audio, (bytes, bytearray, memoryview)):
        data = bytes(audio)
        if data[:4] == b"RIFF":
            return wav_to_mulaw(data)
        audio = _RawChunk(data, encoding, sample_rate)
    converter = MulawConverter()
    return converter.feed(audio) + converter.flush()


def write_wav(target: str | os.PathLike | BinaryIO, samples: np.ndarray | bytes, rate: int) -> None:
    """Write mono int16 samples (array or PCM16 LE bytes) as a 16-bit PCM WAV file."""
    pcm = _as_int16(samples).astype("<i2", copy=False).tobytes()
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    with wave.open(target, "wb") as out:  # leaves a caller's file object open
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def mulaw_to_wav_bytes(mulaw: bytes, *, keep_mulaw: bool = False) -> bytes:
    """8 kHz mu-law as a playable WAV file's bytes (e.g. what the agent said on a call).

    By default the audio is decoded to 16-bit PCM, which every player opens.
    ``keep_mulaw=True`` stores the bytes untouched in a mu-law WAV (format 7,
    with the ``fact`` chunk non-PCM formats need: the 58-byte header sox writes).
    """
    if not keep_mulaw:
        buffer = io.BytesIO()
        write_wav(buffer, ulaw_decode(mulaw), SAMPLE_RATE)
        return buffer.getvalue()
    data = bytes(mulaw)
    fmt = struct.pack(
        "<HHIIHHH", _WAVE_FORMAT_MULAW, 1, SAMPLE_RATE, SAMPLE_RATE, 1, 8, 0
    )
    body = (
        b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<II", 4, len(data))
        + b"data" + struct.pack("<I", len(data)) + data
        + (b"\x00" if len(data) % 2 else b"")
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- Framing --------------------------------------------------------------------


def iter_frames(buf: bytes, size: int = FRAME_BYTES, *, pad: bool = True) -> Iterator[bytes]:
    """Consecutive ``size``-byte frames of ``buf``.

    The last frame is padded with mu-law silence (0xFF) to a full ``size`` so
    Twilio always gets whole 20 ms units (and marks line up with time); pass
    ``pad=False`` to get the short remainder as is.
    """
    if size <= 0:
        raise ValueError(f"frame size must be positive, got {size}")
    view = memoryview(buf)
    for offset in range(0, len(view), size):
        frame = bytes(view[offset : offset + size])
        if pad and len(frame) < size:
            frame += bytes([SILENCE_BYTE]) * (size - len(frame))
        yield frame


def duration_seconds(mulaw_len: int) -> float:
    """Playing time of ``mulaw_len`` bytes of 8 kHz mu-law."""
    return mulaw_len / SAMPLE_RATE
