"""``manage.py speech_pool``: Whisper and Piper loaded once for every daphne process of this host."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from django.core.management.base import BaseCommand, CommandError

from mediastream.conf import app_settings

logger = logging.getLogger(__name__)

_WHISPER = "mediastream.transcription.whisper.WhisperBackend"
_PIPER = "mediastream.tts.piper.PiperBackend"
#: Set by the pool itself (or only meaningful in the stream processes).
_POOL_OWNED = {"POOL", "MAX_CONCURRENT", "CPU_THREADS"}


def _options(kind: str, backend: str) -> tuple[dict, str | None]:
    """The pool-side options of MEDIASTREAM[kind] when it names ``backend``, and its POOL path."""
    config = getattr(app_settings, kind) or {}
    if config.get("BACKEND") != backend:
        return {}, None
    options = dict(config.get("OPTIONS") or {})
    pool = options.get("POOL")
    if kind == "TRANSCRIPTION":  # session options (VAD cutting) stay with the stream processes
        options = {k: v for k, v in options.items() if k in {"MODEL", "MODEL_PATH", "COMPUTE_TYPE", "BEAM_SIZE",
                                                             "LANGUAGE", "ENCODER_WINDOW_SECONDS", "INITIAL_PROMPT"}}  # fmt: skip
    return {k: v for k, v in options.items() if k not in _POOL_OWNED}, pool


class Command(BaseCommand):
    help = (
        "Serve Whisper (speech to text) and Piper (text to speech) to every daphne process of this host "
        "over a Unix socket, so the models are loaded once. Point the backends at it with OPTIONS POOL."
    )

    def add_arguments(self, parser):
        cores = os.cpu_count() or 1
        parser.add_argument("--socket", help="Unix socket path (default: the POOL option of TRANSCRIPTION or TTS)")
        parser.add_argument("--stt-workers", type=int, default=cores, help=f"concurrent transcriptions (default: cores, {cores})")
        parser.add_argument("--tts-workers", type=int, default=cores, help=f"Piper worker processes (default: cores, {cores})")
        parser.add_argument("--no-stt", action="store_true", help="serve no transcription")
        parser.add_argument("--no-tts", action="store_true", help="serve no speech synthesis")

    def handle(self, *args, socket=None, stt_workers, tts_workers, no_stt=False, no_tts=False, **options):
        stt_options, stt_pool = _options("TRANSCRIPTION", _WHISPER)
        tts_options, tts_pool = _options("TTS", _PIPER)
        path = socket or stt_pool or tts_pool
        if not path:
            raise CommandError(
                'No socket: pass --socket PATH, or set MEDIASTREAM["TRANSCRIPTION"]["OPTIONS"]["POOL"] '
                '(or MEDIASTREAM["TTS"]["OPTIONS"]["POOL"]) to the path the daphne processes use.'
            )
        if stt_workers < 1 or tts_workers < 1:
            raise CommandError("--stt-workers and --tts-workers must be at least 1")
        try:
            asyncio.run(self._serve(path, stt_options, tts_options, stt_workers, tts_workers, no_stt, no_tts))
        except (RuntimeError, OSError) as exc:
            raise CommandError(f"speech pool: {exc}") from exc

    async def _serve(self, path, stt_options, tts_options, stt_workers, tts_workers, no_stt, no_tts):
        from mediastream.speechpool.server import SpeechPool

        stt = tts = None
        if not no_stt:
            from mediastream.transcription.whisper import WhisperBackend

            stt = WhisperBackend(**stt_options, MAX_CONCURRENT=stt_workers, CPU_THREADS=1)
        if not no_tts:
            from mediastream.tts.piper import PiperBackend

            tts = [PiperBackend(**tts_options) for _ in range(tts_workers)]
        pool = SpeechPool(path, stt=stt, tts=tts or [])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await pool.start()
            self.stdout.write(f"Speech pool ready on {path} (pid {os.getpid()})", ending="\n")
            self.stdout.flush()
            await stop.wait()
        finally:
            await pool.close()
