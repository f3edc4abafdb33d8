from django.core.management.base import BaseCommand, CommandError

from mediastream.api import Outcome, play_audio, speak


class Command(BaseCommand):
    help = "Say a line (or play a WAV) on a live call and print what happened."

    def add_arguments(self, parser):
        parser.add_argument("call_sid")
        parser.add_argument("text", nargs="?", default="", help="What to say.")
        parser.add_argument("--wav", help="Play this WAV file instead of speaking text.")
        parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait for the outcome.")
        parser.add_argument("--no-wait", action="store_true", help="Queue it and return at once.")

    def handle(self, call_sid, text, wav=None, timeout=60.0, no_wait=False, **options):
        if not text and not wav:
            raise CommandError("Give the text to say, or --wav FILE.")
        wait = not no_wait
        try:
            if wav:
                result = play_audio(call_sid, wav, wait=wait, timeout=timeout)
            else:
                result = speak(call_sid, text, wait=wait, timeout=timeout)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if not wait:
            self.stdout.write(f"queued {result}")
            return
        line = f"{result.outcome.value} {result.item_id}"
        if result.audio_seconds:
            line += f" ({result.audio_seconds:.2f}s of audio)"
        if result.error or result.reason:
            line += f": {result.error or result.reason}"
        self.stdout.write(line)
        if result.outcome in (Outcome.FAILED, Outcome.REJECTED, Outcome.NO_STREAM):
            raise CommandError(line)
