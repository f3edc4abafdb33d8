"""Speech in: one VAD per stream, whichever side runs it, and one speech start per utterance."""

import pytest

from mediastream.speech_in import SpeechIn
from mediastream.transcription.discard import DiscardBackend
from mediastream.transcription.whisper import WhisperBackend
from tests import audio_fixtures as af

pytestmark = pytest.mark.asyncio


def make(backend):
    starts, events = [], []
    speech = SpeechIn(
        call_sid="CA1",
        stream_sid="MZ1",
        backend=backend,
        announce=lambda event, data=None, **kw: events.append((event, data)),
        on_speech_started=lambda offset_ms, source: starts.append((offset_ms, source)),
        call_id=1,
        stream_id=1,
    )
    return speech, starts, events


async def feed(speech, mulaw):
    for frame in af.frames(mulaw):
        speech.feed(frame)


@pytest.mark.parametrize("backend_class", [DiscardBackend, WhisperBackend])
async def test_caller_speech_fires_one_start_from_one_vad(backend_class):
    speech, starts, events = make(backend_class())
    # The Whisper session runs the VAD to cut utterances: its events drive barge-in, no second VAD.
    assert (speech.detector is None) == (backend_class is WhisperBackend)
    clip = af.speech_clip("Wait, stop.", lead_ms=200, tail_ms=900)
    await feed(speech, clip.mulaw)
    assert [source for _, source in starts] == ["vad"]
    assert abs(starts[0][0] - clip.onset_ms) < 120
    await speech.close()
