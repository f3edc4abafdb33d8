"""Speech in: one VAD per stream, whichever side runs it, and one speech start per utterance."""

import asyncio

import pytest

from mediastream.admission import AdmissionRegistry
from mediastream.events import StreamEvent
from mediastream.session import Announce, StreamSession
from mediastream.speech_in import SpeechIn
from mediastream.transcription.discard import DiscardBackend
from mediastream.transcription.whisper import WhisperBackend
from tests import audio_fixtures as af
from tests.session_support import Silent
from tests.support import mediastream_settings, requires_speech

pytestmark = pytest.mark.asyncio


def make(backend):
    """Speech in feeding a stream session, as the consumer wires them; returns the speech starts it fires."""
    starts = []
    session = StreamSession("conn", AdmissionRegistry())

    def on_event(event):
        for action in session.speech(event, Silent()):
            if isinstance(action, Announce) and action.event is StreamEvent.SPEECH_STARTED:
                starts.append((action.data["offset_ms"], action.data["source"]))

    speech = SpeechIn(call_sid="CA1", stream_sid="MZ1", backend=backend, on_event=on_event)
    session.stream_opened(finals_expected=speech.finals_expected)
    return speech, starts


async def feed(speech, mulaw):
    for frame in af.frames(mulaw):
        speech.feed(frame)
        await asyncio.sleep(0)  # a loop turn between frames, as a consumer's (the VAD batch runs in it)


@requires_speech
@pytest.mark.parametrize("backend_class", [DiscardBackend, WhisperBackend])
async def test_caller_speech_fires_one_start_from_one_vad(backend_class):
    # A hang longer than the clip's comma pause keeps "Wait, stop." one utterance.
    with mediastream_settings(VAD={"END_SILENCE_SECONDS": 0.5}):
        await _one_start_from_one_vad(backend_class)


async def _one_start_from_one_vad(backend_class):
    speech, starts = make(backend_class())
    # The Whisper session runs the VAD to cut utterances: its events drive barge-in, no second VAD.
    assert (speech.detector is None) == (backend_class is WhisperBackend)
    clip = af.speech_clip("Wait, stop.", lead_ms=200, tail_ms=900)
    await feed(speech, clip.mulaw)
    assert [source for _, source in starts] == ["vad"]
    assert abs(starts[0][0] - clip.onset_ms) < 120
    await speech.close()
