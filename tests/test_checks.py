"""System checks on the MEDIASTREAM settings."""

from django.conf import settings
from django.test import override_settings

from mediastream.checks import W001, W002, W003, W004, check_deploy, check_settings


def ms(**overrides):
    return override_settings(MEDIASTREAM={**settings.MEDIASTREAM, **overrides})


def ids(messages):
    return sorted(m.id for m in messages)


def test_test_settings_are_clean():
    assert check_settings() == []


def test_missing_auth_token_warns():
    with ms(TWILIO_AUTH_TOKEN=""):
        assert W001 in check_settings()


def test_bad_values_are_errors():
    with ms(MAX_CONNECTIONS=0, PUBLIC_BASE_URL="voice.example.com", PLAYBACK_LEAD_SECONDS=-1):
        assert ids(check_settings()) == ["mediastream.E001", "mediastream.E001", "mediastream.E002"]


def test_unimportable_backend_names_the_setting():
    with ms(TTS={"BACKEND": "nowhere.Backend", "OPTIONS": {}}):
        [error] = check_settings()
    assert error.id == "mediastream.E003" and "MEDIASTREAM['TTS']" in error.msg


def test_unknown_keys_warn():
    with ms(MAX_CONECTIONS=3):
        [warning] = check_settings()
    assert warning.id == "mediastream.W005" and "MAX_CONECTIONS" in warning.msg


def test_deploy_checks():
    with ms(VALIDATE_SIGNATURES=False, PUBLIC_BASE_URL="http://voice.example.com"):
        assert check_deploy() == [W002, W003, W004]
