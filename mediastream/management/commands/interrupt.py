from django.core.management.base import BaseCommand

from mediastream.api import interrupt
from mediastream.management.errors import (
    LAYER_ERRORS,
    layer_unreachable,
    no_stream_answered,
    quiet_library_logs,
    require_shared_layer,
)


class Command(BaseCommand):
    help = "Stop what a live call is saying (barge-in) and drop what is queued."

    def add_arguments(self, parser):
        parser.add_argument("call_sid")
        parser.add_argument("--reason", default="operator")

    def handle(self, call_sid, reason="operator", **options):
        quiet_library_logs()
        require_shared_layer()
        try:
            count = interrupt(call_sid, reason, wait=True)
        except LAYER_ERRORS as exc:
            raise layer_unreachable(exc) from exc
        if count is None:
            raise no_stream_answered(call_sid)
        self.stdout.write(f"interrupted {count} item(s)")
