"""voicecall's settings: top-level TWILIO_* names, the VOICECALL dict over its defaults, reloaded on change."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from voicecall.conf import DEFAULTS, voicecall_settings

from .support import voicecall_overrides


def test_reads_the_top_level_twilio_settings():
    assert voicecall_settings.TWILIO_AUTH_TOKEN == "test-auth-token-12345"
    assert voicecall_settings.TWILIO_PUBLIC_BASE_URL == "https://voice.example.com"


def test_voicecall_dict_is_merged_over_the_defaults():
    with override_settings(VOICECALL={"GREETING": "Hello"}):
        assert voicecall_settings.GREETING == "Hello"
        assert voicecall_settings.STREAM_PATH == DEFAULTS["STREAM_PATH"]


def test_missing_settings_fall_back_to_defaults(settings):
    del settings.VOICECALL
    del settings.TWILIO_PUBLIC_BASE_URL
    voicecall_settings.reload()  # deleting a setting sends no setting_changed
    try:
        assert voicecall_settings.VALIDATE_SIGNATURES is True
        assert voicecall_settings.TWILIO_PUBLIC_BASE_URL == "http://127.0.0.1:8000"
    finally:
        voicecall_settings.reload()


def test_overrides_are_seen_and_undone():
    with voicecall_overrides(TWILIO_AUTH_TOKEN="other", REPLAY_WINDOW_SECONDS=5):
        assert (voicecall_settings.TWILIO_AUTH_TOKEN, voicecall_settings.REPLAY_WINDOW_SECONDS) == ("other", 5)
    assert (voicecall_settings.TWILIO_AUTH_TOKEN, voicecall_settings.REPLAY_WINDOW_SECONDS) == (
        "test-auth-token-12345",
        DEFAULTS["REPLAY_WINDOW_SECONDS"],
    )


def test_top_level_names_are_never_taken_from_voicecall():
    with override_settings(VOICECALL={"TWILIO_AUTH_TOKEN": "from-the-dict"}):
        assert voicecall_settings.TWILIO_AUTH_TOKEN == "test-auth-token-12345"


def test_unknown_names_and_a_non_dict_are_refused():
    with pytest.raises(AttributeError, match="NO_SUCH_SETTING"):
        voicecall_settings.NO_SUCH_SETTING
    with override_settings(VOICECALL=["GREETING"]), pytest.raises(ImproperlyConfigured):
        voicecall_settings.GREETING
