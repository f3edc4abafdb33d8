"""The call-control management commands as a user runs them: output, exit status, at most three lines on failure."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from voicecall import control
from voicecall.models import Call

from .control_support import FROM, TO, fake_twilio
from .fake_twilio.server import INVALID_TO
from .live import ROOT, free_port, server_database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def manage(*args: str, api: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_control",
        "DATABASE_URL": server_database_url(),
        "TWILIO_API_BASE_URL": api,
        "TWILIO_CALLS_PER_SECOND": "1000",
        "LOG_LEVEL": "INFO",  # the twilio library's request logging must stay quiet even so
        "PYTHONPATH": str(ROOT),
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def assert_short_failure(result: subprocess.CompletedProcess, *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert 1 <= len(lines) <= 3, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.fixture
def fake():
    with fake_twilio() as server:
        yield server


def test_place_call_prints_the_new_call_sid(fake):
    result = manage(
        "place_call", TO, "--from", FROM, "--agent", "myproject.agents.Booking", "--machine-detection",
        "--metadata", '{"campaign": "spring"}', api=fake.origin,
    )
    assert result.returncode == 0, result.stderr
    [call_sid] = result.stdout.split()
    assert call_sid in fake.calls
    assert fake.requests_to("/Calls.json")[0].form["MachineDetection"] == ["Enable"]
    call = Call.objects.get(call_sid=call_sid)
    assert call.agent == "myproject.agents.Booking" and call.metadata == {"campaign": "spring"}
    assert "twilio.http_client" not in result.stderr  # the library's request logging is quiet


def test_a_failure_exits_non_zero_with_at_most_three_lines_and_no_traceback(fake):
    result = manage("place_call", INVALID_TO, "--from", FROM, api=fake.origin)
    assert_short_failure(result, "Twilio error 21211", "E.164")
    assert result.stdout == "" and "twilio.http_client" not in result.stderr


def run_in_process(*args: str) -> str:
    """Run a command here; return what it printed (stdout)."""
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def command_error(*args: str) -> str:
    """The message a failing command prints after "CommandError: ", checked to be at most three lines."""
    with pytest.raises(CommandError) as caught:
        run_in_process(*args)
    message = str(caught.value)
    assert len(message.splitlines()) <= 3 and "Traceback" not in message
    return message


def test_hang_up_and_transfer_report_what_twilio_said(fake):
    call = control.place_call(TO, FROM)
    message = command_error("transfer", call.call_sid, "+14155550100")
    assert "Twilio error 21220" in message and "has ended or is not connected yet" in message
    assert run_in_process("hang_up", call.call_sid).strip() == f"{call.call_sid}: canceled"


@pytest.mark.parametrize(
    ("args", "settings", "expected"),
    [
        (("place_call", TO, "--from", FROM), {"TWILIO_AUTH_TOKEN": "wrong"}, ("20003", "TWILIO_AUTH_TOKEN")),
        (("place_call", TO, "--from", FROM), {"TWILIO_ACCOUNT_SID": ""}, ("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",)),
        (("hang_up", "CA123"), {}, ("not a CallSid",)),
        (("transfer", "CA" + "1" * 32, "reception"), {}, ("not an E.164 number or sip: URI",)),
        (("place_call", TO, "--from", FROM, "--metadata", "{nope"), {}, ("--metadata is not JSON",)),
    ],
    ids=["wrong-token", "no-account", "bad-sid", "bad-destination", "bad-metadata"],
)
def test_failures_say_what_to_change(fake, args, settings, expected):
    with override_settings(**settings):
        message = command_error(*args)
    for text in expected:
        assert text in message


def test_an_unreachable_api_names_the_setting():
    with override_settings(TWILIO_API_BASE_URL=f"http://127.0.0.1:{free_port()}"):
        message = command_error("hang_up", "CA" + "1" * 32)
    assert "could not reach Twilio's REST API" in message and "TWILIO_API_BASE_URL" in message


@override_settings(VOICECALL={"MAX_CALL_SECONDS": 60})
def test_end_overdue_calls_reports_how_many_it_ended(fake):
    assert run_in_process("end_overdue_calls").strip() == "ended 0 overdue call(s)"
