"""manage.py check names every wrong call-control setting, with an id and a hint."""

from __future__ import annotations

import pytest
from django.test import override_settings

from voicecall.control_checks import check_call_control

from .support import voicecall_overrides


def ids(**overrides) -> list[str]:
    top = {name: overrides.pop(name) for name in list(overrides) if name.startswith("TWILIO_")}
    with override_settings(**top), voicecall_overrides(**overrides):
        return [error.id for error in check_call_control()]


def test_the_defaults_pass():
    assert ids() == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"TWILIO_API_BASE_URL": "api.twilio.com"}, "voicecall.E104"),
        ({"TWILIO_API_BASE_URL": "https://api.example.com/?x=1"}, "voicecall.E104"),
        ({"TWILIO_CALLS_PER_SECOND": 0}, "voicecall.E105"),
        ({"TWILIO_CALLS_PER_SECOND": "1"}, "voicecall.E105"),
        ({"MAX_CALL_SECONDS": -5}, "voicecall.E101"),
        ({"MAX_LIVE_STREAMS": True}, "voicecall.E101"),
        ({"OVERFLOW": "Sorry"}, "voicecall.E102"),
        ({"OVERFLOW": {"SAY": "Busy", "DAIL": "+14155550100"}}, "voicecall.E102"),
        ({"OVERFLOW": {"DIAL": "front desk"}}, "voicecall.E103"),
        ({"VOICEMAIL": {"TWIML": "Hello"}}, "voicecall.E103"),
    ],
)
def test_a_wrong_setting_is_reported(overrides, expected):
    assert expected in ids(**overrides)


def test_none_switches_the_limits_off():
    assert ids(MAX_CALL_SECONDS=None, MAX_LIVE_STREAMS=None, RING_TIMEOUT_SECONDS=None) == []


def test_every_error_has_a_hint_or_a_self_explaining_message():
    with voicecall_overrides(OVERFLOW={"DIAL": "x"}), override_settings(TWILIO_API_BASE_URL="nope"):
        errors = check_call_control()
    assert errors and all(error.hint for error in errors)
