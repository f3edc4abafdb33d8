"""The app's settings: one ``MEDIASTREAM`` dict merged over documented defaults.

This is the only module that reads ``django.conf.settings`` for the app. The
merged dict is cached and cleared on ``setting_changed`` so ``override_settings``
works in tests. Access values as ``app_settings.MAX_CONNECTIONS``. The Twilio
account, public URL, webhook and stream path settings are voicecall's
(``voicecall.conf.voicecall_settings``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["DEFAULTS", "MOVED_TO_VOICECALL", "app_settings"]

KIB = 1024
MIB = 1024 * KIB

DEFAULTS: dict[str, Any] = {
    # --- Connection guards --------------------------------
    "MAX_CONNECTIONS": 128,
    "MAX_PENDING_CONNECTIONS": 32,
    "MAX_PENDING_CONNECTIONS_PER_IP": 4,
    # Silent sockets displaced from a full pending cap wait here (holding no slot,
    # not counted in MAX_CONNECTIONS) until their start window ends; beyond this
    # many, the oldest is closed (4013).
    "MAX_PARKED_CONNECTIONS": 1024,
    "PRE_START_TIMEOUT": 5.0,  # seconds
    # MAX_CONNECTIONS across every process sharing Redis (mediastream.globalcaps).
    # Keys given are merged over these. ENABLED None: on when the default channel
    # layer is channels_redis' (its first host and prefix are used), off with the
    # in-memory layer. A process's slots count until LEASE_SECONDS after its last
    # refresh (every LEASE_SECONDS / 3): a killed process's slots are free by then.
    # While Redis does not answer within TIMEOUT, each process admits up to its
    # own MAX_CONNECTIONS (logged once per outage).
    "GLOBAL_LIMITS": {
        "ENABLED": None,
        "REDIS_URL": None,  # None: the default channel layer's first host
        "KEY": None,  # None: "<channel layer prefix>:mediastream:connections"
        "MAX_CONNECTIONS": None,  # None: MAX_CONNECTIONS
        "LEASE_SECONDS": 15.0,
        "TIMEOUT": 1.0,  # seconds
    },
    # On SIGTERM (or SIGINT) a process stops admitting, lets its streams run this
    # long, then closes the rest (4013 "Server shutting down") and exits.
    "DRAIN_GRACE_SECONDS": 25.0,
    # Sync Django views (the voice webhooks, the admin) running at once in one process under
    # mediastream.asgi (mediastream.http), as a WSGI server's workers; the others wait their
    # turn (async views are not counted). Each running view competes for the GIL with the
    # event loop that carries the live calls' audio: uncapped, a burst of webhooks starves it
    # (bench/README.md, "A cap on sync views"); capped, the webhooks wait instead. A sync view
    # that waits for another request to this process can wait out its own cap. None: no cap.
    "MAX_SYNC_VIEWS": 8,
    # The health view (mediastream.health) answers 503 when the database does not answer within this.
    "HEALTH_DATABASE_TIMEOUT": 1.0,
    # Peers whose X-Forwarded-For is believed (IPs or CIDR networks).
    "TRUSTED_PROXIES": [],
    # Inbound messages over this close the socket before parsing. Run daphne with
    # --websocket-max-message-size/--websocket-max-frame-size set to match.
    "MAX_MESSAGE_BYTES": 64 * KIB,
    # daphne's send() never blocks, so outbound audio is tracked against Twilio's
    # mark echoes: a stream whose sent-but-unplayed audio exceeds this many
    # seconds has stopped draining and is closed (4013 "Backpressure").
    "MAX_UNCONFIRMED_AUDIO_SECONDS": 15.0,
    # Streams whose heartbeat is older than this are closed by the reaper.
    # Every process with live streams also reaps, each heartbeat, the streams of
    # dead processes of its host and those whose heartbeat is older than this.
    "STREAM_HEARTBEAT_SECONDS": 10,
    "STALE_STREAM_SECONDS": 35,
    # A streaming socket announces stream.health (frames, gaps, mark round trip) this often (0: never):
    # the console's stream figures and the Prometheus counters move at this pace. Each tick is a group
    # send to the call's events group (183 us of CPU with channels_redis, measured): every 2 s that was
    # about 5 % of a silent stream's CPU (bench/README.md, "CPU per inbound frame").
    "STREAM_HEALTH_SECONDS": 5.0,
    # Malformed/unknown message log lines per stream (the rest are only counted).
    "MAX_PROTOCOL_WARNINGS_PER_STREAM": 5,
    # While the database is unavailable a stream's events still reach signals and
    # the events group; their rows wait, at most this many per stream (later ones
    # are logged as lost), and are written when it answers again...
    "DATABASE_BACKLOG_ROWS": 1000,
    # ...also after the stream ended, for this many seconds (teardown does not wait).
    "DATABASE_BACKLOG_SECONDS": 60.0,
    # --- Metrics (mediastream.metrics) ---------------------------------------------
    # Client networks (IPs or CIDR) whose scrapes of /metrics are answered; others get an empty 403...
    "METRICS_ALLOWED_NETWORKS": ["127.0.0.1/32", "::1/128"],
    # ...unless they send "Authorization: Bearer <this>" (empty: no token accepted).
    "METRICS_BEARER_TOKEN": "",
    # --- Speech out ------------------------------------------------------------
    "TTS": {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}},
    "TTS_MAX_PENDING": 8,
    "TTS_SYNTHESIS_TIMEOUT": 8.0,  # seconds
    "TTS_MAX_CHARS": 320,
    # Audio kept buffered at Twilio ahead of real time: enough to ride out
    # scheduling jitter, small enough that barge-in leaves little stale audio.
    "PLAYBACK_LEAD_SECONDS": 0.3,
    # Audio per outbound media message, in ms: a multiple of 20 (whole frames).
    # Twilio plays messages of any size in order; one per 100 ms costs the event
    # loop a fifth of one per 20 ms frame. Cut to PLAYBACK_LEAD_SECONDS + 20 ms,
    # which bounds what Twilio holds (manage.py check warns, mediastream.W016).
    "PLAYBACK_CHUNK_MS": 100,
    "PLAYBACK_MARK_GRACE_SECONDS": 2.0,
    "MAX_IGNORED_MARKS": 64,
    # --- Speech in -------------------------------------------------------------
    # Caller transcripts (partial and final) are cut to this many characters.
    "MAX_TRANSCRIPT_CHARS": 2000,
    "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}},
    "TRANSCRIPTION_QUEUE_BYTES": 2 * MIB,
    "VAD": {
        "ENABLED": True,
        "THRESHOLD": 0.5,
        "START_WINDOWS": 2,  # 32 ms windows above THRESHOLD that make a speech start
        "END_THRESHOLD": 0.35,
        # Silence that ends an utterance: its final transcript comes about then
        # (Whisper transcribes during it). 0.3 s: final p50 ~460 ms after the
        # last speech; 0.5 s: ~660 ms (bench/README.md, "Embedded speech").
        "END_SILENCE_SECONDS": 0.3,
        # Score the windows of all a process's streams in one model call per loop
        # turn (same decisions, about a third of the CPU per window: bench/vad_batch.py).
        "BATCH": True,
    },
    # End of a caller's turn (mediastream.endofturn): MODEL None ends it after
    # HANG_SECONDS of silence; "smart-turn" asks Smart Turn v3.2 at the VAD's
    # end of speech first, HANG_SECONDS then being the fallback. Keys given are
    # merged over these (bench/README.md, "End of turn", has the figures).
    "END_OF_TURN": {"MODEL": None, "HANG_SECONDS": 0.3, "FALLBACK_SECONDS": 2.0, "THRESHOLD": 0.5, "MODEL_PATH": None},
    "BARGE_IN": True,
    # Caller speech over the agent interrupts it only after this many seconds of
    # speech, or this many transcribed words (0 and 0: at the first sign of speech).
    # Either lets backchannels ("uh-huh", a cough) pass under a reply.
    "BARGE_IN_MIN_SPEECH_SECONDS": 0.0,
    "BARGE_IN_MIN_WORDS": 0,
    # Spoken through TTS when a stream starts (empty: nothing).
    "STREAM_GREETING": "",
    # Said on the stream when voicecall ends a call at its time limit (empty: Twilio's own line).
    "TIME_LIMIT_GOODBYE": "We have reached the time limit for this call. Goodbye.",
    # Caller speech does not interrupt the greeting while it plays.
    "SUPPRESS_BARGE_IN_DURING_GREETING": False,
    # --- Agents ----------------------------------------------------------------
    # The AI agent on every call: {"BACKEND": "<dotted path>", "OPTIONS": {...}}
    # (mediastream.agents.*). None: no agent; signals and speak() work as before.
    "AGENT": None,
    # Dotted path of a callable (call) -> agent config or None, asked before a
    # stream starts (e.g. per dialled number); None falls back to AGENT.
    "AGENT_SELECTOR": None,
    # Where the built-in transfer_call tool may send a caller: {"label": "+15551230000"}.
    # The model names a label; it can never dial a number of its own.
    "AGENT_TRANSFER_TARGETS": {},
    # --- Browser talk relay (mediastream.talk) -----------------------------------
    # The live call console's settings (defaults in mediastream/console/conf.py).
    "CONSOLE": {},
    # Keys given in MEDIASTREAM["TALK"] are merged over these.
    "TALK": {
        "SESSION_TTL_SECONDS": 1800,  # a relay session is closed ("completed") this long after create
        "MAX_SESSIONS_PER_CONNECTION": 2,
        "MAX_SESSIONS": 64,  # open relay sessions in this process, all connections together
        # An audio request's audioBase64 longer than this is refused (the
        # WebSocket's daphne limit must be above it, plus the JSON around it).
        "MAX_AUDIO_BASE64_BYTES": 512 * KIB,
    },
}


#: Keys MEDIASTREAM no longer reads, and the voicecall setting that replaced each
#: (checks.py reports them; voicecall/conf.py documents them).
MOVED_TO_VOICECALL: dict[str, str] = {
    "PUBLIC_BASE_URL": "TWILIO_PUBLIC_BASE_URL",
    "TWILIO_ACCOUNT_SID": "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN": "TWILIO_AUTH_TOKEN",
    "VALIDATE_SIGNATURES": "VOICECALL['VALIDATE_SIGNATURES']",
    "REPLAY_WINDOW_SECONDS": "VOICECALL['REPLAY_WINDOW_SECONDS']",
    "MAX_WEBHOOK_BODY_BYTES": "VOICECALL['MAX_WEBHOOK_BODY_BYTES']",
    "GREETING": "VOICECALL['GREETING']",
    "STREAM_PATH": "VOICECALL['STREAM_PATH']",
}


class AppSettings:
    """Lazy view of ``settings.MEDIASTREAM`` over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        user = getattr(settings, "MEDIASTREAM", {}) or {}
        merged = dict(DEFAULTS)
        for key, value in user.items():
            if isinstance(DEFAULTS.get(key), dict) and isinstance(value, dict) and key in ("VAD", "TALK", "GLOBAL_LIMITS"):
                merged[key] = {**DEFAULTS[key], **value}
            else:
                merged[key] = value
        return merged

    def as_dict(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = self._load()
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        values = self.as_dict()
        try:
            return values[name]
        except KeyError:
            raise AttributeError(f"MEDIASTREAM has no setting {name!r}") from None

    def reload(self) -> None:
        self._cache = None


app_settings = AppSettings()


@receiver(setting_changed)
def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "MEDIASTREAM":
        app_settings.reload()
