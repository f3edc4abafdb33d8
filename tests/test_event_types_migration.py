"""voicecall 0002: rows from Twilio's callbacks get the twilio. prefix, mediastream's own keep theirs."""

from importlib import import_module
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection

from voicecall.models import Call, CallEvent

migration = import_module("voicecall.migrations.0002_twilio_event_types")
pytestmark = pytest.mark.django_db

SID = "CA" + "e" * 32
TWILIO = {"CallSid": SID, "AccountSid": "AC" + "0" * 32}


def types():
    return list(CallEvent.objects.order_by("id").values_list("type", flat=True))


def test_prefixes_twilio_rows_and_back():
    call = Call.objects.create(call_sid=SID)
    for old_type, payload in [
        ("call.voice", {**TWILIO, "answer": "stream"}),
        ("stream.started", {**TWILIO, "StreamEvent": "stream-started"}),
        ("stream.started", {"stream_sid": "MZ1", "tracks": ["inbound"]}),  # mediastream's own row
        ("stream.stopped", {**TWILIO, "StreamEvent": "stream-stopped"}),
        ("stream.stopped", {"stream_sid": "MZ1", "close_code": 1000}),
        ("stream.error", {**TWILIO, "StreamError": "boom"}),
        ("call.status", {**TWILIO, "applied": True}),
        ("playback.started", {"text": "hi"}),
    ]:
        CallEvent.objects.create(call=call, type=old_type, payload=payload)
    editor = SimpleNamespace(connection=connection)

    migration.prefix_twilio_types(apps, editor)
    assert types() == [
        "twilio.call.voice",
        "twilio.stream.started",
        "stream.started",
        "twilio.stream.stopped",
        "stream.stopped",
        "twilio.stream.error",
        "twilio.call.status",
        "playback.started",
    ]

    migration.unprefix_twilio_types(apps, editor)
    assert types() == [
        "call.voice",
        "stream.started",
        "stream.started",
        "stream.stopped",
        "stream.stopped",
        "stream.error",
        "call.status",
        "playback.started",
    ]
