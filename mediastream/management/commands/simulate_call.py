"""Play Twilio's part of a call against a running server: no Twilio account needed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from mediastream.audio import FRAME_BYTES, MulawConverter, mulaw_to_wav_bytes, wav_to_mulaw
from mediastream.backends import backends
from mediastream.management.errors import database_failure, first_line, quiet_library_logs
from mediastream.simulator import TwilioCall, TwilioStream, stream_urls
from mediastream.tts.base import TTSError
from voicecall.conf import voicecall_settings
from voicecall.events import TwilioEvent
from voicecall.models import CallEvent

QUIET_EVENTS = {"transcript.partial"}


class Command(BaseCommand):
    help = (
        "Simulate an inbound Twilio call: signed voice webhook, signed media stream, caller audio "
        "from a WAV or spoken text at real-time pace, marks echoed like Twilio, events printed as they happen."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--server", default=None, help="Where the server listens (default: TWILIO_PUBLIC_BASE_URL)."
        )
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--wav", help="Caller audio: a WAV file in any common format.")
        source.add_argument("--say", help="Caller audio: this text, spoken by the configured TTS backend.")
        source.add_argument(
            "--script",
            help="A conversation: a text file (one utterance a line; [pause 1.5], [dtmf 2]) or a JSON list of steps. "
            "Each turn waits for the agent's reply and is printed with its latencies (mediastream.conversation_sim).",
        )
        parser.add_argument("--dtmf", default="", help="Digits to press after the audio, e.g. 12#.")
        parser.add_argument(
            "--listen", type=float, default=6.0,
            help="Seconds of caller silence to keep streaming after the audio (the agent answers meanwhile).",
        )
        parser.add_argument("--out", default="agent.wav", help="Write what the agent said (as played) to this WAV.")
        parser.add_argument("--from-number", default="+15005550006")
        parser.add_argument("--to-number", default="+14155551212")

    def handle(self, *args, **options):
        quiet_library_logs()
        token = voicecall_settings.TWILIO_AUTH_TOKEN
        if not token and voicecall_settings.VALIDATE_SIGNATURES:
            raise CommandError("TWILIO_AUTH_TOKEN is not set: the server refuses unsigned calls (bin/run sets one up).")
        options["server"] = server = options.get("server") or voicecall_settings.TWILIO_PUBLIC_BASE_URL
        if options.get("script"):
            work = self._conversation(token, options)
        else:
            work = self._run(token, self._caller_audio(options), options)
        try:
            asyncio.run(work)
        except httpx.HTTPStatusError as exc:
            raise webhook_refused(exc.response) from exc
        except InvalidStatus as exc:
            raise stream_refused(exc.response.status_code, server) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise CommandError(
                f"The server at {server} stopped answering ({first_line(exc)}).\nIts log says why; is it overloaded?"
            ) from exc
        except (httpx.TransportError, InvalidHandshake, InvalidURI, OSError) as exc:
            raise CommandError(
                f"Could not reach the server at {server} ({first_line(exc)}).\n"
                "Start it (bin/run, or daphne mediastream.asgi:application), or pass --server URL."
            ) from exc
        except DatabaseError as exc:  # the events are read from the server's database
            raise database_failure(exc) from exc
        except ValueError as exc:  # the voice webhook answered something that is not stream TwiML
            raise CommandError(f"{exc}.\nIs {server} serving this project (voicecall.urls under twilio/)?") from exc

    def _caller_audio(self, options) -> bytes:
        if options.get("wav"):
            try:
                return wav_to_mulaw(options["wav"])
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot read {options['wav']}: {exc}") from exc
        if options.get("say"):
            try:
                return asyncio.run(_synthesize(options["say"]))
            except (ImproperlyConfigured, TTSError, OSError, RuntimeError) as exc:
                raise CommandError(
                    f"The TTS backend cannot speak --say ({first_line(exc)}).\n"
                    "Pass --wav FILE instead, or install the speech extra (pip install 'django-twilio-mediastream[speech]')."
                ) from exc
        return b""

    def _conversation(self, token: str, options):
        """--script: the steps checked and spoken before the call, then the conversation (a coroutine to run)."""
        from mediastream import conversation_sim as sim

        try:
            steps = sim.load_script(options["script"])
        except (OSError, sim.ScriptError) as exc:
            raise CommandError(f"Cannot use the script {options['script']}: {exc}") from exc
        try:
            audio = asyncio.run(sim.synthesize(steps))
        except sim.ScriptError as exc:
            raise CommandError(f"Cannot use the script {options['script']}: {exc}") from exc
        except (ImproperlyConfigured, TTSError, OSError, RuntimeError) as exc:
            raise CommandError(
                f"The TTS backend cannot speak the script ({first_line(exc)}).\n"
                "Install the speech extra (pip install 'django-twilio-mediastream[speech]') or set MEDIASTREAM['TTS']."
            ) from exc
        return sim.run_conversation(
            steps, audio, server=options["server"], public_url=voicecall_settings.TWILIO_PUBLIC_BASE_URL,
            auth_token=token, from_number=options["from_number"], to_number=options["to_number"],
            out=options["out"], write=self.stdout.write,
        )  # fmt: skip

    async def _run(self, token: str, caller_audio: bytes, options) -> None:
        call = TwilioCall(
            server_url=options["server"],
            public_url=voicecall_settings.TWILIO_PUBLIC_BASE_URL,
            auth_token=token,
            from_number=options["from_number"],
            to_number=options["to_number"],
        )
        started = time.monotonic()

        def say(line: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:6.2f}s] {line}")

        instructions = await call.answer()
        say(f"call {call.call_sid}: TwiML asks for a stream at {instructions.url}")
        connect_url, signed_url = stream_urls(voicecall_settings.TWILIO_PUBLIC_BASE_URL, options["server"], instructions.url)
        stream = TwilioStream(
            connect_url, signed_url=signed_url, auth_token=token, call_sid=call.call_sid,
            account_sid=call.account_sid, parameters=instructions.parameters,
        )
        media_seen = [0]

        def on_message(message: dict, at: float) -> None:
            event = message.get("event")
            if event == "media":
                if media_seen[0] == 0:
                    say("agent audio starts")
                media_seen[0] += 1
            elif event == "clear":
                say("agent audio cleared (barge-in)")
                media_seen[0] = 0

        stream.on_message = on_message
        await stream.connect()
        await stream.start()
        say(f"stream {stream.stream_sid} started")
        printer = asyncio.create_task(self._print_events(call.call_sid, say))
        try:
            if caller_audio:
                say(f"caller speaks {len(caller_audio) / 8000:.1f}s of audio")
                await stream.stream_audio(caller_audio)
            for digit in options["dtmf"]:
                await stream.send_dtmf(digit)
            await stream.stream_audio(b"\xff" * int(options["listen"] * 8000))
            await stream.stop()
            code = await stream.wait_closed(10)
            say(f"stream closed ({code})")
            await call.status("completed", CallDuration=str(int(time.monotonic() - started)))
            await asyncio.sleep(0.5)  # let the last events land before the final print
        finally:
            printer.cancel()
            await asyncio.gather(printer, return_exceptions=True)
            await stream.close()
        await self._print_new_events(call.call_sid, say, final=True)
        audio = stream.agent_audio
        Path(options["out"]).write_bytes(mulaw_to_wav_bytes(audio))
        say(f"wrote {len(audio) / 8000:.1f}s of agent audio to {options['out']}")

    _seen: set[int]

    async def _print_events(self, call_sid: str, say) -> None:
        self._seen = set()
        while True:
            await self._print_new_events(call_sid, say)
            await asyncio.sleep(0.2)

    async def _print_new_events(self, call_sid: str, say, final: bool = False) -> None:
        events = await database_sync_to_async(list)(
            CallEvent.objects.filter(call__call_sid=call_sid).exclude(pk__in=self._seen).order_by("pk")
        )
        for event in events:
            self._seen.add(event.pk)
            if event.type in QUEUE_NOISE:
                continue
            say(f"{event.type}: {_describe(event.payload)}")


def webhook_refused(response: httpx.Response) -> CommandError:
    """The voice webhook answered an error status: which setting it points at."""
    status, url = response.status_code, voicecall_settings.TWILIO_PUBLIC_BASE_URL
    if status == 403:
        return CommandError(
            "The server refused the signed voice webhook (403): it checks the signature with its TWILIO_AUTH_TOKEN "
            f"and TWILIO_PUBLIC_BASE_URL (here {url!r}),\nand AccountSid against TWILIO_ACCOUNT_SID. Run "
            "simulate_call with the server's settings; the server's log names the check that failed."
        )
    if status == 404:
        return CommandError(
            f"The server has no voice webhook at {response.request.url} (404).\n"
            'Add path("twilio/", include("voicecall.urls")) to the project\'s urlpatterns.'
        )
    if status == 400:
        return CommandError(
            f"The server answered 400 to {response.request.url}: its ALLOWED_HOSTS probably lacks "
            f"{response.request.url.host!r}.\nAdd it to ALLOWED_HOSTS, or pass the --server URL it serves."
        )
    return CommandError(
        f"The server answered {status} to the voice webhook at {response.request.url}; its log says why."
    )


def stream_refused(status: int, server: str) -> CommandError:
    """The media stream upgrade was answered with an HTTP status instead of a WebSocket."""
    if status == 403:
        return CommandError(
            "The server refused the media stream (403): the upgrade's signature (TWILIO_AUTH_TOKEN, "
            "TWILIO_PUBLIC_BASE_URL), the stream path or its connection cap.\nThe server's log says which."
        )
    return CommandError(
        f"The server at {server} answered {status} to the media stream upgrade: it does not serve media streams.\n"
        'Set ASGI_APPLICATION = "mediastream.asgi.application" and serve it with daphne (manage.py check says more).'
    )


QUEUE_NOISE = {TwilioEvent.CALL_VOICE, TwilioEvent.CALL_STATUS, "playback.queued"} | QUIET_EVENTS


def _describe(payload: dict) -> str:
    for key in ("text", "digit", "error", "reason"):
        if payload.get(key):
            detail = f"{payload[key]!r}"
            if "outcome" in payload:
                detail = f"{payload['outcome']} {detail}"
            return detail
    return ", ".join(f"{k}={v}" for k, v in payload.items() if v not in (None, "", [], {}))[:160]


async def _synthesize(text: str) -> bytes:
    converter = MulawConverter()
    out = bytearray()
    async for chunk in backends.tts.synthesize(text):
        out += converter.feed(chunk)
    out += converter.flush()
    await backends.aclose_all()  # before asyncio.run() closes the loop the backends opened on
    if not out:
        raise CommandError("The TTS backend produced no audio for --say.")
    pad = (-len(out)) % FRAME_BYTES
    return bytes(out) + b"\xff" * pad
