"""Prefix the event types written for Twilio's callbacks with ``twilio.``.

``stream.started`` and ``stream.stopped`` were also written by mediastream for
its own socket; the rows from Twilio's stream status callback are the ones
whose payload holds Twilio's form parameters (``CallSid``), so only those move.
"""

from django.db import migrations

#: Old type -> new type. Kept here, not imported: a migration must not change with the code.
RENAMES = {
    "call.voice": "twilio.call.voice",
    "call.status": "twilio.call.status",
    "stream.started": "twilio.stream.started",
    "stream.stopped": "twilio.stream.stopped",
    "stream.error": "twilio.stream.error",
    "stream.other": "twilio.stream.other",
}


def prefix_twilio_types(apps, schema_editor):
    CallEvent = apps.get_model("voicecall", "CallEvent")
    events = CallEvent.objects.using(schema_editor.connection.alias)
    for old, new in RENAMES.items():
        events.filter(type=old, payload__has_key="CallSid").update(type=new)


def unprefix_twilio_types(apps, schema_editor):
    CallEvent = apps.get_model("voicecall", "CallEvent")
    events = CallEvent.objects.using(schema_editor.connection.alias)
    for old, new in RENAMES.items():
        events.filter(type=new).update(type=old)


class Migration(migrations.Migration):
    dependencies = [("voicecall", "0001_initial")]

    operations = [migrations.RunPython(prefix_twilio_types, unprefix_twilio_types, elidable=True)]
