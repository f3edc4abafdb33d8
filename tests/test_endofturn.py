"""The optional end-of-turn model: pinned extraction from the wheel, Whisper features, settings, a verdict."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from mediastream import endofturn
from mediastream.endofturn import EndOfTurn, EndOfTurnError
from tests import speech_set
from tests.support import mediastream_settings, requires_speech

INSTALLED = endofturn.models_dir() / endofturn.MODEL_FILE
requires_model = pytest.mark.skipif(
    not INSTALLED.is_file(), reason=f"the Smart Turn model is not installed at {INSTALLED} (bin/setup extracts it)"
)


def _wheel(path, data: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(endofturn.WHEEL_MEMBER, data)
    return path


@requires_model
def test_install_extracts_the_pinned_model_and_refuses_another(tmp_path):
    good = _wheel(tmp_path / "good.whl", INSTALLED.read_bytes())
    target = endofturn.install(good, tmp_path / "models" / endofturn.MODEL_FILE)
    assert target.read_bytes() == INSTALLED.read_bytes()
    bad = _wheel(tmp_path / "bad.whl", INSTALLED.read_bytes()[:-1] + b"\0")
    with pytest.raises(EndOfTurnError, match="pinned SHA-256"):
        endofturn.install(bad, tmp_path / "other" / endofturn.MODEL_FILE)
    assert not (tmp_path / "other" / endofturn.MODEL_FILE).exists()
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as archive:
        archive.writestr("README", "no model")
    with pytest.raises(EndOfTurnError, match="has no"):
        endofturn.install(tmp_path / "empty.whl", tmp_path / "x.onnx")


def test_a_missing_or_altered_model_fails_with_the_install_step(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIASTREAM_MODELS_DIR", str(tmp_path))
    with pytest.raises(EndOfTurnError, match="python -m mediastream.endofturn install"):
        EndOfTurn()
    (tmp_path / endofturn.MODEL_FILE).write_bytes(b"not the model")
    with pytest.raises(EndOfTurnError, match="pinned SHA-256"):
        EndOfTurn()


@requires_speech
def test_features_are_whisper_log_mel():
    from faster_whisper.feature_extractor import FeatureExtractor

    x = np.random.default_rng(1).standard_normal(16000 * 8).astype(np.float32) * 0.1
    ours = endofturn.log_mel(x)
    assert ours.shape == (80, 800)
    # Whisper's own extractor on the same (normalised) waveform.
    normalised = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    theirs = FeatureExtractor(feature_size=80)(normalised, padding=0)[:, :800]
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    # Shorter audio is placed at the end of the window: its last frames are the same sound.
    short = endofturn.log_mel(x[-16000:])
    assert short.shape == (80, 800)


def test_settings_default_to_vad_silence_only_and_are_checked():
    assert endofturn.get_end_of_turn() is None
    config = endofturn.end_of_turn_settings()
    assert config.model is None and config.hang_seconds == endofturn.DEFAULTS["HANG_SECONDS"]
    with mediastream_settings(END_OF_TURN={"MODEL": "smart-turn-v9"}):
        with pytest.raises(EndOfTurnError, match="MODEL"):
            endofturn.end_of_turn_settings()
    with mediastream_settings(END_OF_TURN={"HANG_SECONDS": 0}):
        with pytest.raises(EndOfTurnError, match="HANG_SECONDS"):
            endofturn.end_of_turn_settings()


@requires_model
@requires_speech
def test_a_finished_sentence_is_complete():
    with mediastream_settings(END_OF_TURN={"MODEL": "smart-turn"}):
        model = endofturn.get_end_of_turn()
        assert model is endofturn.get_end_of_turn()  # loaded once per process
    (clip,) = speech_set.human_clips(ids=["cmu-goforward"])
    complete, probability = model.is_complete(endofturn.pcm16k_from_mulaw(clip.mulaw[: 8 * 2700]))
    assert complete and probability > 0.5


def test_the_documented_defaults_are_the_ones_used():
    from mediastream.conf import DEFAULTS

    assert DEFAULTS["END_OF_TURN"] == endofturn.DEFAULTS


def test_system_check_names_a_wrong_value_and_a_missing_model(tmp_path):
    from mediastream.checks import check_end_of_turn

    assert check_end_of_turn() == []  # the default: no model
    with mediastream_settings(END_OF_TURN={"FALLBACK_SECONDS": "2"}):
        [error] = check_end_of_turn()
    assert error.id == "mediastream.E014" and "FALLBACK_SECONDS" in error.msg
    with mediastream_settings(END_OF_TURN={"MODEL": "smart-turn", "MODEL_PATH": str(tmp_path / "absent.onnx")}):
        [warning] = check_end_of_turn()
    assert warning.id == "mediastream.W008" and "smart-turn" in warning.hint
