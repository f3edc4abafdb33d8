"""System checks for the ``MEDIASTREAM`` settings (``manage.py check``, ``--deploy``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, app_settings

__all__ = ["check_settings", "check_deploy"]

W001 = Warning(
    "MEDIASTREAM['TWILIO_AUTH_TOKEN'] is empty, so every Twilio webhook and media stream is refused.",
    hint="Set the TWILIO_AUTH_TOKEN environment variable to your Twilio account's auth token.",
    id="mediastream.W001",
)
W002 = Warning(
    "Twilio signature validation is switched off (MEDIASTREAM['VALIDATE_SIGNATURES'] = False): "
    "anyone can post webhooks and open media streams.",
    hint="Remove VALIDATE_SIGNATURES from MEDIASTREAM (it defaults to True).",
    id="mediastream.W002",
)
W003 = Warning(
    "MEDIASTREAM['PUBLIC_BASE_URL'] is not https: Twilio only opens media streams over wss://.",
    hint="Set PUBLIC_BASE_URL to the https origin Twilio reaches, e.g. https://voice.example.com.",
    id="mediastream.W003",
)
W004 = Warning(
    "The channel layer is in-memory: speak() and interrupt() from other processes cannot reach calls.",
    hint="Set REDIS_URL (channels_redis.core.RedisChannelLayer) when running more than one process.",
    id="mediastream.W004",
)

_POSITIVE = (
    "MAX_CONNECTIONS",
    "MAX_PENDING_CONNECTIONS",
    "MAX_PENDING_CONNECTIONS_PER_IP",
    "PRE_START_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "MAX_UNCONFIRMED_AUDIO_SECONDS",
    "TTS_MAX_PENDING",
    "TTS_SYNTHESIS_TIMEOUT",
    "TTS_MAX_CHARS",
    "TRANSCRIPTION_QUEUE_BYTES",
    "STREAM_HEARTBEAT_SECONDS",
    "STALE_STREAM_SECONDS",
    "REPLAY_WINDOW_SECONDS",
    "MAX_WEBHOOK_BODY_BYTES",
)


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs) -> list:
    errors: list = []
    user = getattr(settings, "MEDIASTREAM", {}) or {}
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            Warning(
                f"Unknown MEDIASTREAM keys: {', '.join(unknown)}.",
                hint="See mediastream/conf.py for the settings and their defaults.",
                id="mediastream.W005",
            )
        )
    for name in _POSITIVE:
        value = getattr(app_settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            errors.append(
                Error(f"MEDIASTREAM['{name}'] must be a positive number, got {value!r}.", id="mediastream.E001")
            )
    lead = app_settings.PLAYBACK_LEAD_SECONDS
    if isinstance(lead, bool) or not isinstance(lead, (int, float)) or lead < 0:
        errors.append(
            Error(f"MEDIASTREAM['PLAYBACK_LEAD_SECONDS'] must be zero or more, got {lead!r}.", id="mediastream.E001")
        )
    url = urlsplit(str(app_settings.PUBLIC_BASE_URL or ""))
    if url.scheme not in ("http", "https") or not url.hostname:
        errors.append(
            Error(
                f"MEDIASTREAM['PUBLIC_BASE_URL'] must be an http(s) URL, got {app_settings.PUBLIC_BASE_URL!r}.",
                hint="e.g. https://voice.example.com",
                id="mediastream.E002",
            )
        )
    for key in ("TTS", "TRANSCRIPTION"):
        config = getattr(app_settings, key)
        path = config.get("BACKEND") if isinstance(config, dict) else None
        try:
            if not path:
                raise ImportError("no BACKEND given")
            import_string(path)
        except ImportError as exc:
            errors.append(
                Error(
                    f"MEDIASTREAM['{key}']['BACKEND'] cannot be imported: {exc}",
                    hint=f'e.g. {DEFAULTS[key]["BACKEND"]!r}; the offline defaults need `pip install ".[speech]"`.',
                    id="mediastream.E003",
                )
            )
    if app_settings.STALE_STREAM_SECONDS <= 2 * app_settings.STREAM_HEARTBEAT_SECONDS:
        errors.append(
            Error(
                "MEDIASTREAM['STALE_STREAM_SECONDS'] must be more than twice STREAM_HEARTBEAT_SECONDS, "
                "or the reaper closes live streams between two heartbeats.",
                id="mediastream.E004",
            )
        )
    if app_settings.VALIDATE_SIGNATURES and not app_settings.TWILIO_AUTH_TOKEN:
        errors.append(W001)
    if app_settings.MAX_WEBHOOK_BODY_BYTES > (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or float("inf")):
        errors.append(
            Warning(
                "MEDIASTREAM['MAX_WEBHOOK_BODY_BYTES'] is above DATA_UPLOAD_MAX_MEMORY_SIZE; Django refuses such bodies first.",
                id="mediastream.W006",
            )
        )
    return errors


@register(Tags.security, deploy=True)
def check_deploy(app_configs=None, **kwargs) -> list:
    errors: list = []
    if not app_settings.VALIDATE_SIGNATURES:
        errors.append(W002)
    if urlsplit(str(app_settings.PUBLIC_BASE_URL or "")).scheme != "https":
        errors.append(W003)
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    if backend.endswith("InMemoryChannelLayer"):
        errors.append(W004)
    return errors
