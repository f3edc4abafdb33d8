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


# --- the Piper voice -------------------------------------------------------------------


def test_shipped_piper_voice_matches_the_pin():
    from mediastream.tts import piper

    backend = piper.PiperBackend()
    assert {path.name for path in backend.pinned_files} == set(piper.DEFAULT_VOICE_SHA256)
    piper.verify_default_voice(*backend.pinned_files)


def test_a_tampered_piper_voice_is_refused(tmp_path):
    import shutil

    from mediastream.tts import piper
    from mediastream.tts.base import TTSError

    shipped = piper.PiperBackend()
    piper.verify_default_voice(*shipped.pinned_files)  # the shipped files pass (and are remembered)
    for path in shipped.pinned_files:
        shutil.copy(path, tmp_path / path.name)
    config = tmp_path / "en_US-joe-medium.onnx.json"
    config.write_text(config.read_text().replace('"sample_rate": 22050', '"sample_rate": 16000'))
    with pytest.raises(TTSError, match="pinned SHA-256"):
        piper.verify_default_voice(tmp_path / "en_US-joe-medium.onnx", config)


def test_the_piper_backend_checks_the_voice_before_its_worker_loads_it():
    import asyncio

    from mediastream.tts import piper

    async def warm_up_and_close():
        backend = piper.PiperBackend()
        piper._verified.clear()
        try:
            await backend.warm_up()
        finally:
            await backend.aclose()
        return set(piper._verified)

    assert asyncio.run(warm_up_and_close()) == set(piper.PiperBackend().pinned_files)


def test_a_voice_of_the_projects_own_is_not_pinned(tmp_path):
    import shutil

    from mediastream.tts import piper

    for path in piper.PiperBackend().pinned_files:
        shutil.copy(path, tmp_path / path.name)
    assert piper.PiperBackend(VOICE_MODEL=tmp_path / "en_US-joe-medium.onnx").pinned_files == ()
