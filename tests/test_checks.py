"""System checks on the VOICECALL, TWILIO_* and MEDIASTREAM settings."""

import pytest
from django.conf import settings
from django.core.checks.registry import registry
from django.test import override_settings

from mediastream import checks as mediastream_checks
from mediastream.checks import W004
from voicecall import checks as voicecall_checks
from voicecall.checks import W001, W002, W003

from .support import mediastream_settings as ms
from .support import voicecall_overrides



def ids(messages):
    return sorted(m.id for m in messages)


def check_settings():
    return voicecall_checks.check_settings() + mediastream_checks.check_settings()


def check_deploy():
    return voicecall_checks.check_deploy() + mediastream_checks.check_deploy()


def test_test_settings_are_clean():
    assert check_settings() == []


def test_both_apps_register_their_checks():
    registered = registry.get_checks(include_deployment_checks=True)
    for module in (voicecall_checks, mediastream_checks):
        assert module.check_settings in registered and module.check_deploy in registered


def test_missing_auth_token_warns():
    with voicecall_overrides(TWILIO_AUTH_TOKEN=""):
        assert W001 in check_settings()


def test_missing_auth_token_hint_names_the_django_setting():
    assert "TWILIO_AUTH_TOKEN" in W001.hint and "settings" in W001.hint and "environment" not in W001.hint


def test_bad_values_are_errors():
    with ms(MAX_CONNECTIONS=0, PLAYBACK_LEAD_SECONDS=-1), voicecall_overrides(TWILIO_PUBLIC_BASE_URL="voice.example.com"):
        assert ids(check_settings()) == ["mediastream.E001", "mediastream.E001", "voicecall.E002"]


@pytest.mark.parametrize("chunk", [0, 10, 30, 110, 1020, 100.0, "100", True, None])
def test_a_playback_chunk_that_is_not_whole_frames_is_an_error(chunk):
    with ms(PLAYBACK_CHUNK_MS=chunk):
        assert ids(check_settings()) == ["mediastream.E016"]


def test_a_playback_chunk_beyond_the_lead_warns_that_it_is_cut():
    with ms(PLAYBACK_CHUNK_MS=100, PLAYBACK_LEAD_SECONDS=0):
        (warning,) = check_settings()
    assert warning.id == "mediastream.W016" and "messages carry 20 ms" in warning.msg
    for chunk, lead in ((20, 0), (320, 0.3), (1000, 2.0)):
        with ms(PLAYBACK_CHUNK_MS=chunk, PLAYBACK_LEAD_SECONDS=lead):
            assert check_settings() == []


def test_bad_voicecall_numbers_are_errors():
    with voicecall_overrides(REPLAY_WINDOW_SECONDS=0, MAX_WEBHOOK_BODY_BYTES="64k", DATABASE_RETRY_AFTER_SECONDS=-1):
        assert ids(check_settings()) == ["voicecall.E001", "voicecall.E001", "voicecall.E001"]


def test_webhook_body_limit_above_djangos_warns():
    with voicecall_overrides(MAX_WEBHOOK_BODY_BYTES=settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1):
        assert ids(check_settings()) == ["voicecall.W004"]


def test_unimportable_backend_names_the_setting():
    with ms(TTS={"BACKEND": "nowhere.Backend", "OPTIONS": {}}):
        [error] = check_settings()
    assert error.id == "mediastream.E003" and "MEDIASTREAM['TTS']" in error.msg


def test_unknown_keys_warn():
    with ms(MAX_CONECTIONS=3):
        [warning] = check_settings()
    assert warning.id == "mediastream.W005" and "MAX_CONECTIONS" in warning.msg


def test_unknown_voicecall_keys_warn():
    with voicecall_overrides(GREETNG="Hello"):
        [warning] = check_settings()
    assert warning.id == "voicecall.W005" and "GREETNG" in warning.msg


@pytest.mark.parametrize(
    "key, new_setting",
    [
        ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN"),
        ("PUBLIC_BASE_URL", "TWILIO_PUBLIC_BASE_URL"),
        ("VALIDATE_SIGNATURES", "VOICECALL['VALIDATE_SIGNATURES']"),
        ("STREAM_PATH", "VOICECALL['STREAM_PATH']"),
    ],
)
def test_keys_moved_to_voicecall_are_errors_naming_the_new_setting(key, new_setting):
    with ms(**{key: "x"}):
        [error] = check_settings()
    assert error.id == "mediastream.E005" and f"MEDIASTREAM['{key}']" in error.msg
    assert f"Set {new_setting} instead" in error.hint


def test_top_level_names_inside_voicecall_are_errors():
    with override_settings(VOICECALL={**settings.VOICECALL, "TWILIO_AUTH_TOKEN": "ignored"}):
        [error] = check_settings()
    assert error.id == "voicecall.E003" and "Set TWILIO_AUTH_TOKEN as a top-level" in error.hint


def test_deploy_checks():
    with voicecall_overrides(VALIDATE_SIGNATURES=False, TWILIO_PUBLIC_BASE_URL="http://voice.example.com"):
        assert check_deploy() == [W002, W003, W004]


def test_checks_never_raise_on_missing_or_odd_settings():
    with override_settings(VOICECALL=["not", "a", "dict"], MEDIASTREAM="nor this", DATA_UPLOAD_MAX_MEMORY_SIZE=None):
        del settings.CHANNEL_LAYERS
        assert ids(check_settings()) == ["mediastream.E006", "voicecall.E004"]
        assert check_deploy() == []
    with override_settings(CHANNEL_LAYERS={"default": "odd"}, DATA_UPLOAD_MAX_MEMORY_SIZE=None):
        assert check_settings() == [] and check_deploy() == []


def test_agent_settings_that_do_not_import_are_named():
    with ms(AGENT={"BACKEND": "nowhere.Agent"}, AGENT_SELECTOR="nowhere.select", AGENT_TRANSFER_TARGETS={"sales": ""}):
        found = ids(mediastream_checks.check_settings())
    assert {"mediastream.E011", "mediastream.E012", "mediastream.E013"} <= set(found)
    with ms(AGENT={"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"SCRIPT": "mediastream.agents.demo"}}):
        assert not {"mediastream.E011", "mediastream.E012", "mediastream.E013"} & set(ids(mediastream_checks.check_settings()))


@pytest.mark.parametrize(
    "backend, warned",
    [
        ("channels_redis.core.RedisChannelLayer", False),
        ("channels.layers.InMemoryChannelLayer", False),
        ("channels_redis.pubsub.RedisPubSubChannelLayer", True),
    ],
)
def test_a_layer_without_the_stream_directory_warns(backend, warned):
    """Commands find other processes' streams through channels_redis' Redis; another layer says so."""
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": backend}}):
        found = [m.id for m in mediastream_checks.check_channel_layers()]
    assert found == (["mediastream.W015"] if warned else [])


@pytest.mark.parametrize("value, ok", [(8, True), (None, True), (1, True), (0, False), (2.5, False), (True, False)])
def test_manage_py_check_names_a_wrong_http_threads(value, ok):
    from mediastream.checks import check_settings

    with ms(MAX_SYNC_VIEWS=value):
        wrong = [e.msg for e in check_settings() if e.id == "mediastream.E001" and "MAX_SYNC_VIEWS" in e.msg]
    assert wrong == ([] if ok else [f"MEDIASTREAM['MAX_SYNC_VIEWS'] must be a whole number of at least 1, or None, got {value!r}."])
