"""``manage.py end_overdue_calls``: end calls past ``VOICECALL["MAX_CALL_SECONDS"]`` (run it from cron)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ...limits import end_overdue_calls
from ..cli import run_control


class Command(BaseCommand):
    help = "End every call answered more than VOICECALL['MAX_CALL_SECONDS'] ago: a goodbye, then a hang-up."

    def handle(self, *args, **options):
        ended = run_control(end_overdue_calls)
        failed = [call for call in ended if call.error]
        self.stdout.write(f"ended {len(ended) - len(failed)} overdue call(s)")
        if failed:
            raise CommandError(f"{len(failed)} call(s) could not be ended, e.g. {failed[0].call_sid}: {failed[0].error}")
