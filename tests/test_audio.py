"""mediastream.audio: codec, resampling, streaming conversion, WAV files, frames."""

from __future__ import annotations

import io
import struct
import warnings
import wave

import numpy as np
import pytest

from mediastream.audio import (
    FRAME_BYTES,
    SILENCE_FRAME,
    AudioFormatError,
    MulawConverter,
    Resampler,
    alaw_decode,
    duration_seconds,
    iter_frames,
    mulaw_to_wav_bytes,
    pcm16_to_mulaw,
    read_wav,
    to_mulaw,
    ulaw_decode,
    ulaw_encode,
    wav_to_mulaw,
    write_wav,
)
from mediastream.tts.base import AudioChunk


def tone(freq: float, rate: int, seconds: float, amplitude: float = 12000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def through_phone_path(samples: np.ndarray, rate: int) -> np.ndarray:
    """PCM at ``rate`` -> 8 kHz mu-law -> decoded PCM, trimmed of edge effects."""
    return ulaw_decode(pcm16_to_mulaw(samples, rate))[200:-200]


# --- codec ------------------------------------------------------------------------


def test_known_mulaw_codes():
    assert ulaw_encode(np.array([1000], dtype=np.int16)) == b"\xce"
    assert ulaw_encode(np.array([0], dtype=np.int16)) == b"\xff"
    assert ulaw_encode(struct.pack("<h", 1000)) == b"\xce"


def test_alaw_decode_matches_audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop", reason="audioop was removed in Python 3.13")
    codes = bytes(range(256))
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


# --- resampling ---------------------------------------------------------------------


def test_resampler_identity_when_rates_match():
    samples = tone(1000, 8000, 0.1)
    resampler = Resampler(8000, 8000)
    assert np.array_equal(resampler.process(samples), samples)
    assert resampler.flush().size == 0


@pytest.mark.parametrize("rate", [24000, 48000])
def test_six_khz_is_filtered_out_before_8k(rate):
    passband = rms(through_phone_path(tone(1000, rate, 0.6), rate))
    alias = rms(through_phone_path(tone(6000, rate, 0.6), rate))
    assert passband > 7500
    assert alias < 0.1 * passband


def test_five_khz_from_piper_rate_is_strongly_attenuated():
    passband = rms(through_phone_path(tone(1000, 22050, 0.6), 22050))
    alias = rms(through_phone_path(tone(5000, 22050, 0.6), 22050))
    assert alias < 0.01 * passband  # ratecv would leak it at -1.5 dB


def test_output_length_follows_the_rate_ratio():
    assert len(pcm16_to_mulaw(tone(440, 24000, 0.5), 24000)) == 4000
    assert len(pcm16_to_mulaw(tone(1000, 48000, 0.6), 48000)) == 4800
    assert len(pcm16_to_mulaw(np.zeros(22050, dtype=np.int16), 22050)) == 8000
    assert len(pcm16_to_mulaw(np.zeros(1001, dtype=np.int16), 22050)) == 1001 * 8000 // 22050


def test_constant_pcm_stays_constant_through_the_resampler():
    # 1920 bytes of PCM16 1000 at 24 kHz are two frames of 0xCE.
    mulaw = pcm16_to_mulaw(np.full(960, 1000, dtype=np.int16), 24000)
    assert mulaw == b"\xce" * 320
    assert pcm16_to_mulaw(np.zeros(2205, dtype=np.int16), 22050) == b"\xff" * 800


def test_resampler_is_reusable_after_flush():
    resampler = Resampler(24000)
    first = np.concatenate([resampler.process(tone(440, 24000, 0.2)), resampler.flush()])
    second = np.concatenate([resampler.process(tone(440, 24000, 0.2)), resampler.flush()])
    assert np.array_equal(first, second)
    assert len(first) == 1600


# --- streaming conversion ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [22050, 24000, 16000, 8000])
def test_streaming_converter_matches_one_shot_with_odd_boundaries(rate):
    rng = np.random.default_rng(rate)
    pcm = tone(440, rate, 0.7).tobytes() + (rng.standard_normal(rate // 2) * 3000).astype("<i2").tobytes()
    expected = pcm16_to_mulaw(pcm, rate)
    converter = MulawConverter()
    out = bytearray()
    offset = 0
    while offset < len(pcm):
        size = int(rng.integers(1, 700))  # odd sizes split samples across chunks
        out += converter.feed(AudioChunk(pcm[offset : offset + size], "pcm_s16le", rate))
        offset += size
    out += converter.flush()
    assert bytes(out) == expected


def test_converter_passes_8k_mulaw_through():
    converter = MulawConverter()
    audio = bytes(range(256))
    assert converter.feed(AudioChunk(audio, "mulaw", 8000)) == audio
    assert converter.flush() == b""


def test_converter_flushes_pcm_before_switching_to_mulaw():
    converter = MulawConverter()
    head = converter.feed(AudioChunk(np.full(2400, 1000, "<i2").tobytes(), "pcm_s16le", 24000))
    out = head + converter.feed(AudioChunk(b"\x7f" * 10, "mulaw", 8000)) + converter.flush()
    assert out == b"\xce" * 800 + b"\x7f" * 10


@pytest.mark.parametrize(
    "chunk, message",
    [
        (AudioChunk(b"\xff" * 10, "mulaw", 16000), "must be 8000 Hz"),
        (AudioChunk(b"\x00" * 10, "opus", 48000), "unsupported TTS audio encoding"),  # type: ignore[arg-type]
    ],
)
def test_converter_rejects_what_it_cannot_play(chunk, message):
    with pytest.raises(AudioFormatError, match=message):
        MulawConverter().feed(chunk)


def test_converter_cost_per_frame_is_small():
    """Not a benchmark: guards against an accidental O(n^2) or per-call filter design."""
    import time

    pcm = tone(440, 22050, 2.0).tobytes()
    step = 882  # 20 ms at 22050 Hz
    converter = MulawConverter()
    started = time.perf_counter()
    for offset in range(0, len(pcm), step):
        converter.feed(AudioChunk(pcm[offset : offset + step], "pcm_s16le", 22050))
    converter.flush()
    per_frame = (time.perf_counter() - started) / (len(pcm) / step)
    assert per_frame < 0.002


# --- framing ------------------------------------------------------------------------------


def test_iter_frames_pads_the_last_frame_with_silence():
    frames = list(iter_frames(b"\x01" * 400))
    assert [len(f) for f in frames] == [FRAME_BYTES] * 3
    assert frames[2] == b"\x01" * 80 + b"\xff" * 80


def test_iter_frames_without_padding_and_empty():
    assert [len(f) for f in iter_frames(b"\x01" * 400, pad=False)] == [160, 160, 80]
    assert list(iter_frames(b"")) == []
    assert SILENCE_FRAME == b"\xff" * 160


def test_duration_seconds():
    assert duration_seconds(8000) == 1.0
    assert duration_seconds(FRAME_BYTES) == 0.02


# --- WAV reading --------------------------------------------------------------------------


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WAVE"
    for chunk_id, payload in chunks:
        body += chunk_id + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(
    tag: int, channels: int, rate: int, bits: int, *, width: int | None = None, extra: bytes | None = None
) -> bytes:
    width = width or bits // 8
    block = channels * width
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return body if extra is None else body + struct.pack("<H", len(extra)) + extra


def extensible(subformat: int, channels: int, rate: int, bits: int, valid_bits: int | None = None) -> bytes:
    guid = struct.pack("<I", subformat) + b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    extra = struct.pack("<HI", valid_bits or bits, 0x4 if channels == 1 else 0x3) + guid
    return fmt(0xFFFE, channels, rate, bits, extra=extra)


def stdlib_wav(samples: bytes, *, width: int, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(samples)
    return buffer.getvalue()


SAMPLES = np.array([0, 1000, -1000, 32767, -32768, 12345, -54, 7], dtype=np.int16)


def test_read_pcm16_written_by_the_stdlib(tmp_path):
    data = stdlib_wav(SAMPLES.astype("<i2").tobytes(), width=2)
    samples, rate = read_wav(data)
    assert rate == 16000 and samples.dtype == np.int16
    assert np.array_equal(samples, SAMPLES)
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    assert np.array_equal(read_wav(path)[0], SAMPLES)
    assert np.array_equal(read_wav(str(path))[0], SAMPLES)
    assert np.array_equal(read_wav(io.BytesIO(data))[0], SAMPLES)


def test_read_pcm8_unsigned():
    data = stdlib_wav(bytes([128, 255, 0, 129]), width=1, rate=8000)
    samples, _ = read_wav(data)
    assert samples.tolist() == [0, 127 * 256, -32768, 256]


def test_read_pcm24_and_pcm32():
    wide = SAMPLES.astype(np.int32) * 256 + 0x7F  # low byte of noise rounds away
    pcm24 = b"".join(struct.pack("<i", int(v))[:3] for v in wide)
    assert np.array_equal(read_wav(stdlib_wav(pcm24, width=3))[0], SAMPLES)
    pcm32 = (SAMPLES.astype(np.int64) * 65536 + 1000).astype("<i4").tobytes()
    assert np.array_equal(read_wav(stdlib_wav(pcm32, width=4))[0], SAMPLES)


def test_stereo_is_downmixed():
    left = np.array([1000, -2000, 400], dtype=np.int16)
    right = np.array([3000, 0, -400], dtype=np.int16)
    interleaved = np.column_stack([left, right]).astype("<i2").tobytes()
    samples, _ = read_wav(stdlib_wav(interleaved, width=2, channels=2))
    assert samples.tolist() == [2000, -1000, 0]


@pytest.mark.parametrize("dtype, bits", [("<f4", 32), ("<f8", 64)])
def test_read_ieee_float(dtype, bits):
    floats = (SAMPLES.astype(np.float64) / 32767).clip(-1, 1).astype(dtype)
    data = riff(
        (b"fmt ", fmt(3, 1, 24000, bits, extra=b"")),
        (b"fact", struct.pack("<I", 8)),
        (b"data", floats.tobytes()),
    )
    samples, rate = read_wav(data)
    assert rate == 24000
    assert np.array_equal(samples, np.maximum(SAMPLES, -32767))  # -1.0 is -32767


def test_read_sox_style_mulaw_with_58_byte_header():
    mulaw = ulaw_encode(SAMPLES)
    data = riff(
        (b"fmt ", fmt(7, 1, 8000, 8, extra=b"")),
        (b"fact", struct.pack("<I", len(mulaw))),
        (b"data", mulaw),
    )
    assert data.index(b"data") + 8 == 58
    samples, rate = read_wav(data)
    assert rate == 8000 and np.array_equal(samples, ulaw_decode(mulaw))
    assert wav_to_mulaw(data) == mulaw  # 8 kHz mu-law is copied, not re-encoded


def test_read_alaw():
    codes = bytes(range(0, 256, 5))
    data = riff((b"fmt ", fmt(6, 1, 8000, 8, extra=b"")), (b"data", codes))
    assert np.array_equal(read_wav(data)[0], alaw_decode(codes))


@pytest.mark.parametrize(
    "subformat, bits, payload",
    [
        (1, 16, SAMPLES.astype("<i2").tobytes()),
        (3, 32, (SAMPLES.astype(np.float64) / 32767).clip(-1, 1).astype("<f4").tobytes()),
    ],
)
def test_read_wave_format_extensible(subformat, bits, payload):
    data = riff((b"fmt ", extensible(subformat, 1, 44100, bits)), (b"data", payload))
    samples, rate = read_wav(data)
    assert rate == 44100
    assert np.array_equal(samples, np.maximum(SAMPLES, -32767) if subformat == 3 else SAMPLES)


def test_chunks_are_walked_with_padding_and_streamed_data_sizes():
    pcm = SAMPLES.astype("<i2").tobytes()
    data = riff((b"LIST", b"odd"), (b"fmt ", fmt(1, 1, 8000, 16)), (b"data", pcm))
    assert np.array_equal(read_wav(data)[0], SAMPLES)
    # A WAV written to a pipe: the data size is a placeholder.
    streamed = bytearray(data)
    at = streamed.index(b"data") + 4
    streamed[at : at + 4] = b"\xff\xff\xff\xff"
    assert np.array_equal(read_wav(bytes(streamed))[0], SAMPLES)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"ID3\x03" + b"\x00" * 40, "not a WAV file"),
        (b"", "not a WAV file"),
        (riff((b"data", b"\x00\x00")), "no 'fmt ' chunk"),
        (riff((b"fmt ", fmt(1, 1, 8000, 16))), "no 'data' chunk"),
        (riff((b"fmt ", fmt(2, 1, 8000, 4, width=1)), (b"data", b"\x00")), "format tag 0x0002"),
        (riff((b"fmt ", fmt(1, 1, 8000, 12, width=3)[:10]), (b"data", b"\x00")), "truncated"),
        (b"RIFX" + b"\x00" * 40, "RIFX"),
        (riff((b"fmt ", fmt(1, 0, 8000, 16)), (b"data", b"\x00\x00")), "0 channels at 8000 Hz"),
    ],
)
def test_bad_wavs_raise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        read_wav(data)


def test_other_encodings_libsndfile_decodes_are_refused():
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, SAMPLES, 8000, format="WAV", subtype="IMA_ADPCM")
    with pytest.raises(AudioFormatError, match="format tag 0x0011"):
        read_wav(buffer.getvalue())


def test_wav_to_mulaw_resamples_pcm():
    data = stdlib_wav(np.full(16000, 1000, "<i2").tobytes(), width=2, rate=16000)
    assert wav_to_mulaw(data) == b"\xce" * 8000


# --- to_mulaw and writing -----------------------------------------------------------------------


def test_to_mulaw_accepts_wav_raw_mulaw_and_chunks():
    raw = bytes(range(200))
    assert to_mulaw(raw) == raw
    wav_bytes = stdlib_wav(np.full(800, 1000, "<i2").tobytes(), width=2, rate=8000)
    assert to_mulaw(wav_bytes) == b"\xce" * 800
    assert to_mulaw(AudioChunk(np.full(2400, 1000, "<i2").tobytes(), "pcm_s16le", 24000)) == b"\xce" * 800
    raw_pcm = np.full(160, 1000, "<i2").tobytes()
    assert to_mulaw(raw_pcm, encoding="pcm_s16le", sample_rate=8000) == b"\xce" * 160


def test_write_wav_round_trip(tmp_path):
    path = tmp_path / "out.wav"
    write_wav(path, SAMPLES, 22050)
    assert np.array_equal(read_wav(path)[0], SAMPLES)
    buffer = io.BytesIO()
    write_wav(buffer, SAMPLES.astype("<i2").tobytes(), 8000)
    assert not buffer.closed
    with wave.open(io.BytesIO(buffer.getvalue())) as check:
        assert (check.getnchannels(), check.getsampwidth(), check.getframerate()) == (1, 2, 8000)


def test_mulaw_to_wav_bytes_both_ways():
    mulaw = bytes(range(1, 256)) + b"\xff"
    pcm_wav = mulaw_to_wav_bytes(mulaw)
    samples, rate = read_wav(pcm_wav)
    assert rate == 8000 and np.array_equal(samples, ulaw_decode(mulaw))
    exact = mulaw_to_wav_bytes(mulaw[:-1], keep_mulaw=True)  # odd length: padded chunk
    assert exact.index(b"data") + 8 == 58
    assert wav_to_mulaw(exact) == mulaw[:-1]
