"""The embedded Whisper models are the ones whose hashes we pinned, checked when they load."""

import dataclasses

import pytest

from mediastream.transcription import whisper  # imports faster_whisper only when a model loads

from .support import requires_speech

pytestmark = requires_speech


@pytest.mark.parametrize("name", sorted(whisper.PINNED_MODELS))
def test_shipped_models_match_their_pins(name):
    files = whisper.PINNED_MODELS[name].read()  # joins the parts and raises on a mismatch
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"} <= set(files)


def test_a_tampered_model_is_refused():
    model = whisper.PINNED_MODELS["tiny.en"]
    data = bytearray(model.read()["model.bin"])
    data[1000:1003] = b"\x00\x01\x02"
    with pytest.raises(whisper.WhisperError, match="pinned SHA-256"):
        whisper.verify_model(model, bytes(data))


def test_loading_checks_the_pin():
    # The same wheels with another pin: reading them (what loading does) refuses them.
    wrong = dataclasses.replace(whisper.PINNED_MODELS["tiny.en"], sha256="0" * 64)
    with pytest.raises(whisper.WhisperError, match="pinned SHA-256"):
        wrong.read()
