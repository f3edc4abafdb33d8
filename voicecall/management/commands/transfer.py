"""``manage.py transfer CALL_SID TO``: move a live call to a number or SIP URI."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from ...control import transfer
from ..cli import run_control


class Command(BaseCommand):
    help = "Transfer a live call with <Dial>: its stream ends and Twilio dials TO (E.164 number or sip: URI)."

    def add_arguments(self, parser):
        parser.add_argument("call_sid")
        parser.add_argument("to")
        parser.add_argument("--caller-id", help="Caller ID for the dialled leg (default: the call's).")

    def handle(self, *args, call_sid, to, caller_id=None, **options):
        status = run_control(lambda: transfer(call_sid, to, caller_id=caller_id))
        self.stdout.write(f"{call_sid}: transferring to {to} ({status})")
