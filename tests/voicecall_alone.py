"""Run by tests/test_app_boundary.py in a fresh interpreter, with tests.settings_voicecall_only.

Imports voicecall's modules, runs ``manage.py check`` and one call's webhooks
and admin pages, then prints what it saw as one JSON line.
"""

from __future__ import annotations

import io
import json
import sys

import django

VOICECALL_MODULES = (
    "admin",
    "admin_controls",
    "checks",
    "conf",
    "events",
    "models",
    "records",
    "replay",
    "twiml",
    "twilio_auth",
    "urls",
    "views",
)
CALL_SID = "CA" + "7" * 32
STREAM_SID = "MZ" + "7" * 32


def _signed_post(client, path: str, params: dict):
    from django.conf import settings
    from twilio.request_validator import RequestValidator

    url = settings.TWILIO_PUBLIC_BASE_URL + path
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params)
    return client.post(path, params, HTTP_X_TWILIO_SIGNATURE=signature)


def main() -> dict:
    django.setup()
    from importlib import import_module

    for name in VOICECALL_MODULES:
        import_module(f"voicecall.{name}")

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    call_command("check", fail_level="WARNING", stdout=io.StringIO())  # raises SystemCheckError on any message
    call_command("migrate", verbosity=0)
    setup_test_environment()

    from voicecall.models import Call, CallEvent

    client = Client()
    base = {"AccountSid": settings.TWILIO_ACCOUNT_SID, "CallSid": CALL_SID, "From": "+15005550006", "To": "+14155551212"}
    voice = _signed_post(client, "/twilio/voice/", {**base, "CallStatus": "ringing", "Direction": "inbound"})
    stream = _signed_post(client, "/twilio/stream-status/", {**base, "StreamSid": STREAM_SID, "StreamEvent": "stream-started"})
    status = _signed_post(client, "/twilio/status/", {**base, "CallStatus": "in-progress", "SequenceNumber": "1"})

    call = Call.objects.get(call_sid=CALL_SID)
    admin = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(admin)
    change_page = client.get(f"/admin/voicecall/call/{call.pk}/change/")
    changelist = client.get("/admin/voicecall/call/")
    return {
        "voice": [voice.status_code, voice["Content-Type"], voice.content.decode()],
        "stream_status": stream.status_code,
        "call_status": [status.status_code, call.status],
        "events": list(CallEvent.objects.order_by("id").values_list("type", flat=True)),
        "change_page": [change_page.status_code, "Say a line" in change_page.content.decode()],
        "changelist": [changelist.status_code, "interrupt_calls" in changelist.content.decode()],
        "mediastream_modules": sorted(name for name in sys.modules if name.partition(".")[0] == "mediastream"),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
