from django.core.management.base import BaseCommand, CommandError

from mediastream.api import Outcome, play_audio, speak
from mediastream.management.errors import (
    LAYER_ERRORS,
    layer_unreachable,
    no_stream_answered,
    quiet_library_logs,
    require_shared_layer,
)


class Command(BaseCommand):
    help = "Say a line (or play a WAV) on a live call and print what happened."

    def add_arguments(self, parser):
        parser.add_argument("call_sid")
        parser.add_argument("text", nargs="?", default="", help="What to say.")
        parser.add_argument("--wav", help="Play this WAV file instead of speaking text.")
        parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait for the outcome.")
        parser.add_argument("--no-wait", action="store_true", help="Queue it and return at once.")

    def handle(self, call_sid, text, wav=None, timeout=60.0, no_wait=False, **options):
        quiet_library_logs()
        if not text and not wav:
            raise CommandError("Give the text to say, or --wav FILE.")
        require_shared_layer()
        wait = not no_wait
        try:
            if wav:
                result = play_audio(call_sid, wav, wait=wait, timeout=timeout)
            else:
                result = speak(call_sid, text, wait=wait, timeout=timeout)
        except LAYER_ERRORS as exc:
            if wav and isinstance(exc, OSError) and getattr(exc, "filename", None):
                raise CommandError(f"Cannot read {wav}: {exc.strerror or exc}") from exc
            raise layer_unreachable(exc) from exc
        except ValueError as exc:  # text or audio the API refuses (empty, not a WAV)
            raise CommandError(str(exc)) from exc
        if not wait:
            self.stdout.write(f"queued {result}")
            return
        if result.outcome is Outcome.NO_STREAM:
            raise no_stream_answered(call_sid)
        line = f"{result.outcome.value} {result.item_id}"
        if result.audio_seconds:
            line += f" ({result.audio_seconds:.2f}s of audio)"
        if result.error or result.reason:
            line += f": {result.error or result.reason}"
        self.stdout.write(line)
        if result.outcome in (Outcome.FAILED, Outcome.REJECTED):
            raise CommandError(line)
