"""``manage.py hang_up CALL_SID``: end a call through Twilio's REST API."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from ...control import hang_up
from ..cli import run_control


class Command(BaseCommand):
    help = "Hang up a call (a ringing one is canceled)."

    def add_arguments(self, parser):
        parser.add_argument("call_sid")

    def handle(self, *args, call_sid, **options):
        status = run_control(lambda: hang_up(call_sid))
        self.stdout.write(f"{call_sid}: {status or 'hung up'}")
