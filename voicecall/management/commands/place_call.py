"""``manage.py place_call TO --from FROM``: start an outbound call through Twilio's REST API."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ...control import MACHINE_DETECTION_MODES, place_call
from ..cli import run_control


class Command(BaseCommand):
    help = (
        "Place an outbound call: Twilio fetches its TwiML from this app's voice webhook and reports to its "
        "status callback. Prints the new CallSid."
    )

    def add_arguments(self, parser):
        parser.add_argument("to", help="E.164 number (+14155551234) or sip: URI to call.")
        parser.add_argument("--from", dest="from_", required=True, help="Your Twilio number to call from.")
        parser.add_argument("--agent", help="Dotted path of what answers the call (kept on the call record).")
        parser.add_argument(
            "--machine-detection", nargs="?", const="Enable", choices=MACHINE_DETECTION_MODES,
            help="Ask Twilio to tell a human from an answering machine (DetectMessageEnd waits for the beep).",
        )
        parser.add_argument("--timeout", type=int, help="Seconds to let it ring (1-600).")
        parser.add_argument("--metadata", help="A JSON object kept on the call record.")

    def handle(self, *args, to, from_, agent=None, machine_detection=None, timeout=None, metadata=None, **options):
        try:
            data = json.loads(metadata) if metadata else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--metadata is not JSON: {exc}") from None
        call = run_control(
            lambda: place_call(to, from_, agent=agent, machine_detection=machine_detection, timeout=timeout, metadata=data)
        )
        self.stdout.write(call.call_sid)
