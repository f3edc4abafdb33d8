"""voicecall stands alone: importable, checked and serving webhooks without mediastream installed.

mediastream depends on voicecall, never the reverse. A fresh interpreter with
``tests.settings_voicecall_only`` (no mediastream in INSTALLED_APPS) runs
``tests/voicecall_alone.py``, which must never import a mediastream module.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def alone() -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_voicecall_only", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.voicecall_alone"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_mediastream_module_is_imported(alone):
    assert alone["mediastream_modules"] == []


def test_signed_voice_webhook_answers_with_a_stream(alone):
    status, content_type, body = alone["voice"]
    assert (status, content_type) == (200, "text/xml")
    assert '<Stream statusCallback="https://voice.example.com/twilio/stream-status/"' in body
    assert 'url="wss://voice.example.com/twilio/media-stream/"' in body
    assert '<Parameter name="token"' in body


def test_status_callbacks_are_recorded(alone):
    assert alone["stream_status"] == 200
    assert alone["call_status"] == [200, "in-progress"]
    assert alone["events"] == ["twilio.call.voice", "twilio.stream.started", "twilio.call.status"]


def test_admin_works_without_live_controls(alone):
    assert alone["change_page"] == [200, False]  # no "Say a line"
    assert alone["changelist"] == [200, False]  # no interrupt action
