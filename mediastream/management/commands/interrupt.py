from django.core.management.base import BaseCommand, CommandError

from mediastream.api import interrupt


class Command(BaseCommand):
    help = "Stop what a live call is saying (barge-in) and drop what is queued."

    def add_arguments(self, parser):
        parser.add_argument("call_sid")
        parser.add_argument("--reason", default="operator")

    def handle(self, call_sid, reason="operator", **options):
        count = interrupt(call_sid, reason, wait=True)
        if count is None:
            raise CommandError(f"No live stream answered for {call_sid}.")
        self.stdout.write(f"interrupted {count} item(s)")
