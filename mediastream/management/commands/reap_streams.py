from django.core.management.base import BaseCommand
from django.db import DatabaseError

from mediastream import db
from mediastream.conf import app_settings
from mediastream.management.errors import database_failure, quiet_library_logs


class Command(BaseCommand):
    help = "Close media streams whose process died (no heartbeat), so no call stays stuck streaming."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=float,
            default=None,
            help="Seconds without a heartbeat before a stream counts as stale "
            "(default: MEDIASTREAM['STALE_STREAM_SECONDS']).",
        )
        parser.add_argument(
            "--local", action="store_true", help="Also close this host's streams whose process no longer exists."
        )

    def handle(self, *args, older_than=None, local=False, **options):
        quiet_library_logs()
        stale_after = app_settings.STALE_STREAM_SECONDS if older_than is None else older_than
        try:
            reaped = db.reap_stale_streams(stale_after=stale_after, server_id=db.SERVER_ID if local else None)
        except DatabaseError as exc:
            raise database_failure(exc) from exc
        self.stdout.write(f"Closed {len(reaped)} stale stream(s)" + (": " + ", ".join(reaped) if reaped else "."))
