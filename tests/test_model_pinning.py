"""The embedded Whisper model is the one whose hash we pinned."""

import shutil

import pytest

from mediastream.transcription import whisper  # imports faster_whisper only when a model loads

from .support import requires_speech

pytestmark = requires_speech


def test_shipped_model_matches_the_pin():
    whisper.verify_default_model(whisper.default_model_path())


def test_a_tampered_model_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(whisper.default_model_path() / "model.bin", model / "model.bin")
    with open(model / "model.bin", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(whisper.WhisperError, match="pinned SHA-256"):
        whisper.verify_default_model(model)
