"""The management commands fail in at most three lines that say what to do, never a traceback.

``speak``, ``interrupt``, ``simulate_call`` and ``reap_streams`` against what
goes wrong for a user: no server listening, a server that refuses the
signature (403), Redis down, the in-memory layer (no other process can reach
it), the database down. In process the :class:`CommandError` is read (Django
prints it as ``CommandError: ...`` and exits 1); one real command line proves
what the terminal shows.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from mediastream.simulator import new_sid

from .live import ROOT, free_port
from .support import voicecall_overrides

MAX_LINES = 3


def failure(*args: str) -> str:
    """Run a command that must fail; its message, checked to be short."""
    with pytest.raises(CommandError) as caught:
        call_command(*args)
    message = str(caught.value)
    assert 0 < len(message.splitlines()) <= MAX_LINES, message
    assert "Traceback" not in message
    return message


def dead_redis_layers() -> dict:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_timeout": None}]},
        }
    }


# --- the channel layer ---------------------------------------------------------------


@pytest.mark.parametrize("command", [("speak", "Hello there."), ("interrupt",)])
def test_on_the_in_memory_layer_a_live_call_command_says_no_other_process_can_reach_it(command):
    name, *rest = command
    message = failure(name, new_sid("CA"), *rest)  # the test settings' layer is in-memory
    assert "in-memory channel layer" in message and "REDIS_URL" in message and "CHANNEL_LAYERS" in message


@pytest.mark.parametrize("command", [("speak", "Hello there."), ("interrupt",), ("speak", "Hi.", "--no-wait")])
def test_with_redis_down_a_live_call_command_names_redis_and_the_setting(command):
    name, *rest = command
    layers = dead_redis_layers()
    with override_settings(CHANNEL_LAYERS=layers):
        message = failure(name, new_sid("CA"), *rest)
    address = layers["default"]["CONFIG"]["hosts"][0]["address"]
    assert f"Cannot reach the channel layer's Redis at {address}" in message
    assert "CHANNEL_LAYERS" in message and "REDIS_URL" in message


def test_no_live_stream_is_said_plainly(daphne):
    with daphne.start(name="no-stream") as live, override_settings(CHANNEL_LAYERS=live.channel_layers()):
        message = failure("interrupt", new_sid("CA"))
    assert message.startswith("No live stream answered for CA")


def test_speak_with_a_missing_wav_names_the_file(daphne):
    with daphne.start(name="missing-wav") as live, override_settings(CHANNEL_LAYERS=live.channel_layers()):
        message = failure("speak", new_sid("CA"), "--wav", "/nonexistent/hold.wav")
    assert message.startswith("Cannot read /nonexistent/hold.wav")


# --- simulate_call ---------------------------------------------------------------------


def test_simulate_call_with_no_server_listening_says_how_to_start_one():
    server = f"http://127.0.0.1:{free_port()}"
    message = failure("simulate_call", "--server", server, "--listen", "0")
    assert message.startswith(f"Could not reach the server at {server}") and "--server" in message


@pytest.mark.django_db(transaction=True)
def test_simulate_call_refused_with_403_names_the_settings_to_compare(daphne):
    with daphne.start(name="wrong-token") as live, voicecall_overrides(TWILIO_AUTH_TOKEN="not-the-servers-token"):
        message = failure("simulate_call", "--server", live.http, "--listen", "0")
    assert "(403)" in message
    for setting in ("TWILIO_AUTH_TOKEN", "TWILIO_PUBLIC_BASE_URL", "TWILIO_ACCOUNT_SID"):
        assert setting in message


def test_simulate_call_against_something_that_is_not_this_project(tmp_path):
    """A server that answers 404 to the voice webhook: the urls line is missing."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        message = failure("simulate_call", "--server", f"http://127.0.0.1:{httpd.server_port}", "--listen", "0")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "(404)" in message and 'include("voicecall.urls")' in message


# --- the terminal ------------------------------------------------------------------------


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "settings", "TWILIO_AUTH_TOKEN": "x", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_on_the_command_line_the_database_down_is_two_lines_and_exit_1():
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/voice"
    result = run_manage("reap_streams", DATABASE_URL=dead, REDIS_URL="", DB_POOL_TIMEOUT="1", DB_CONNECT_TIMEOUT="1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) <= MAX_LINES, result.stderr
    assert lines[0].startswith("CommandError: Cannot use the postgresql database voice (127.0.0.1)")
    assert "DATABASE_URL" in result.stderr


def test_on_the_command_line_speak_with_redis_down_is_short():
    result = run_manage("speak", new_sid("CA"), "Hello.", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= MAX_LINES, result.stderr
    assert result.stderr.startswith("CommandError: Cannot reach the channel layer's Redis")
