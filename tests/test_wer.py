"""Embedded STT accuracy and the speculative final: a few committed real recordings through the phone path.

The full test set and its figures are ``bench/wer.py``; these keep the default
model's accuracy on real callers from regressing and prove the speculative
transcription is used only when no voice followed it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests import audio_fixtures as af
from tests import speech_set
from tests.speech_set.scoring import Score, normalize, score
from tests.support import requires_speech
from tests.vendors_stt.listener import RecordingListener

#: Real speakers: read speech, a command with a number, an accented phone number, playing cards.
HUMAN_IDS = ["librivox-0880", "librivox-0930", "cmu-goforward", "fsdd-jackson", "cmu-cards-005"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("My number is 555-234-8910.", "my number is five five five two three four eight nine one zero"),
        ("At 7:30, or 9:05 or 5:00.", "at seven thirty or nine oh five or five"),
        ("I'd like the 12th, it's $340.", "i would like the twelfth it is three hundred forty dollars"),
        ("Dr. Patel can't - OK, 20 minutes", "doctor patel can not okay twenty minutes"),
        ("Um, the zip is 94107", "the zip is nine four one zero seven"),
        ("It says three hundred and forty dollars", "it says three hundred forty dollars"),
        ("The meeting starts at 9.15 tomorrow, not 9.75", "the meeting starts at nine fifteen tomorrow not nine seven five"),
        ("Fish and chips, one and two", "fish and chips one and two"),  # "and" outside a number stays
    ],
)
def test_the_scorer_compares_spoken_words(text, words):
    assert normalize(text) == words.split()


def test_word_error_rate_counts_substitutions_deletions_and_insertions():
    assert score("book a table for four", "book a table for four") == Score(0, 5)
    assert score("book a table for four", "look a table for") == Score(2, 5)  # one substitution, one deletion
    assert score("wait", "wait wait stop") == Score(2, 1)
    assert (Score(1, 4) + Score(1, 6)).wer == pytest.approx(0.2)


def test_another_noise_seed_redraws_only_the_line_noise():
    """bench/wer.py --noise-seed: the same speech under another draw of the -55 dBFS line noise, nothing else."""
    import numpy as np

    from mediastream.audio import ulaw_decode

    (clip,) = speech_set.human_clips(ids=["cmu-goforward"])
    (same,) = speech_set.human_clips(ids=["cmu-goforward"], noise_seed=0)
    (other,) = speech_set.human_clips(ids=["cmu-goforward"], noise_seed=1000)
    assert same == clip  # 0 is the set itself
    assert other.text == clip.text and len(other.mulaw) == len(clip.mulaw) and other.mulaw != clip.mulaw
    difference = ulaw_decode(other.mulaw).astype(float) - ulaw_decode(clip.mulaw).astype(float)
    # Two independent draws of -55 dBFS noise differ by about -52 dBFS (plus mu-law rounding): far under the speech.
    assert 20 * np.log10(np.sqrt((difference**2).mean()) / 32768) < -45
    (quiet,) = speech_set.human_clips(ids=["cmu-goforward"], noise_dbfs=None, noise_seed=1000)
    assert quiet == speech_set.human_clips(ids=["cmu-goforward"], noise_dbfs=None)[0]  # no noise: nothing to redraw


@requires_speech
@pytest.mark.asyncio
async def test_default_model_transcribes_real_callers_within_ten_percent():
    from mediastream.transcription.whisper import WhisperBackend

    backend = WhisperBackend()
    total = Score(0, 0)
    for clip in speech_set.human_clips(ids=HUMAN_IDS):
        text = await backend.transcribe(clip.mulaw)
        total += score(clip.text, text)
        print(f"{clip.id}: {clip.text!r} -> {text!r}")
    assert total.words > 30
    assert total.wer <= 0.10, total


def session_hang_ms() -> int:
    from mediastream.vad import WINDOW_MS, SpeechDetector

    return SpeechDetector().end_windows * WINDOW_MS


async def _feed(session, mulaw: bytes) -> None:
    for frame in af.frames(mulaw):
        session.send_audio(frame)
        await asyncio.sleep(0)  # let call_soon callbacks run, as a stream's loop would


#: The speculation's two triggers: the VAD's quiet (the default), and the energy's fall as well.
TRIGGERS = pytest.mark.parametrize("options", [{}, {"SPECULATE_AFTER_QUIET_MS": 60}], ids=["vad-quiet", "energy-quiet"])


@requires_speech
@pytest.mark.asyncio
@TRIGGERS
async def test_the_final_is_the_transcription_started_in_the_pause(options):
    from mediastream.transcription.whisper import WhisperBackend

    (clip,) = speech_set.human_clips(ids=["cmu-goforward"])
    rec = RecordingListener()
    session = WhisperBackend(**options).create_session(stream_sid="MZ1", call_sid="CA1", listener=rec.listener)
    await session.connect()
    await _feed(session, clip.mulaw + af.silence(1000))
    (final,) = await rec.wait_count("final", timeout=20)
    assert score(clip.text, final[0]).errors <= 1, final
    assert session.speculations_kept == 1
    if options:
        assert session.speculations_on_quiet >= 1  # the energy's fall started one
    else:
        assert session.speculations == 1 and session.speculations_on_quiet == 0
    await session.close()


@requires_speech
@pytest.mark.asyncio
async def test_a_softer_phrase_after_the_pause_is_not_lost_to_an_energy_speculation():
    """The second phrase 31 dB under the first: past the energy rule, but the VAD hears it, so the
    speculation started on the energy's fall is dropped and the final holds both phrases."""
    from mediastream.audio import ulaw_decode, ulaw_encode
    from mediastream.transcription.whisper import WhisperBackend

    first, second = af.speech_clip("Go forward", lead_ms=300, tail_ms=0), af.speech_clip("ten meters.", lead_ms=0)
    spoken_first = first.mulaw[: (first.end_ms + 10) * 8]
    soft = (ulaw_decode(second.mulaw[max(0, second.onset_ms - 10) * 8 :]).astype("float64") * 10 ** (-31 / 20)).astype("int16")
    rec = RecordingListener()
    session = WhisperBackend(SPECULATE_AFTER_QUIET_MS=60).create_session(stream_sid="MZ3", call_sid="CA3", listener=rec.listener)
    await session.connect()
    await _feed(session, spoken_first + af.silence(session_hang_ms() // 2) + ulaw_encode(soft) + af.silence(1000))
    finals = await rec.wait_count("final", timeout=20)
    await session.close()
    assert session.speculations_on_quiet >= 1
    words = normalize(" ".join(final[0] for final in finals))
    assert words[0] == "go" and "meters" in words, (finals, session.speculations, session.speculations_kept, session.speculations_on_quiet, session.detector.voiced_until_ms)


@requires_speech
@pytest.mark.asyncio
async def test_a_transcription_cancelled_while_its_encoder_runs_skips_the_decoder():
    """A dropped speculation gives the executor back after the encoder: the decoder never runs."""
    import threading

    from mediastream.transcription.whisper import WhisperBackend, _engines

    (clip,) = speech_set.human_clips(ids=["cmu-goforward"])
    backend = WhisperBackend()
    await backend.load()
    model = _engines[backend.key].model
    encoding, release = threading.Event(), threading.Event()
    decodes = []
    real_encode, real_generate = model.encode, model.model.generate

    def encode(features):  # CTranslate2's encoder, held until the test has cancelled the task
        encoding.set()
        release.wait(10)
        return real_encode(features)

    class Generator:  # CTranslate2's Whisper object, counting decoder runs
        def __getattr__(self, name):
            return getattr(real_whisper, name)

        def generate(self, *args, **kwargs):
            decodes.append(1)
            return real_generate(*args, **kwargs)

    real_whisper = model.model
    model.encode, model.model = encode, Generator()
    try:
        task = asyncio.ensure_future(backend.transcribe(clip.mulaw))
        assert await asyncio.to_thread(encoding.wait, 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        release.set()
        finished = asyncio.ensure_future(backend.transcribe(clip.mulaw))  # queued behind the cancelled one
        text = await asyncio.wait_for(finished, 30)
    finally:
        model.encode, model.model = real_encode, real_whisper
    assert decodes == [1] and text  # only the second transcription decoded




@requires_speech
@pytest.mark.asyncio
@TRIGGERS
async def test_voice_after_the_pause_discards_the_speculation(options):
    from mediastream.transcription.whisper import WhisperBackend

    # A pause shorter than the VAD hang time: one utterance, but a speculation starts in it.
    first, second = af.speech_clip("Go forward", lead_ms=300, tail_ms=0), af.speech_clip("ten meters.", lead_ms=0)
    spoken_first = first.mulaw[: (first.end_ms + 10) * 8]  # Piper's own trailing silence cut off
    spoken_second = second.mulaw[max(0, second.onset_ms - 10) * 8 :]
    hang_ms = session_hang_ms()
    rec = RecordingListener()
    session = WhisperBackend(**options).create_session(stream_sid="MZ2", call_sid="CA2", listener=rec.listener)
    await session.connect()
    await _feed(session, spoken_first + af.silence(hang_ms // 2) + spoken_second)
    (final,) = await rec.wait_count("final", timeout=20)
    await session.close()
    assert session.speculations >= 2 and session.speculations_kept == 1
    words = normalize(final[0])
    assert words[0] == "go" and words[-1] == "meters", final  # the whole utterance, not the part before the pause


@requires_speech
@pytest.mark.asyncio
async def test_the_initial_prompt_never_turns_line_noise_into_words():
    """The default INITIAL_PROMPT tells Whisper it hears a phone call: on noise alone it must still say nothing."""
    from mediastream.transcription.whisper import DEFAULT_INITIAL_PROMPT, WhisperBackend

    backend = WhisperBackend()
    assert backend.initial_prompt == DEFAULT_INITIAL_PROMPT
    for seed, dbfs in ((1, -55.0), (2, -40.0), (3, -30.0)):
        assert await backend.transcribe(af.white_noise(1500, dbfs=dbfs, seed=seed)) == "", dbfs
    assert WhisperBackend(INITIAL_PROMPT="").initial_prompt is None  # "" (or None) decodes without one
