"""System checks for the ``MEDIASTREAM`` settings (``manage.py check``, ``--deploy``).

The Twilio account, public URL and webhook settings are checked by
``voicecall.checks``; here a key that moved there is an error, so a value
MEDIASTREAM no longer reads is not silently ignored.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, MOVED_TO_VOICECALL, app_settings

__all__ = ["W004", "check_settings", "check_deploy"]

W004 = Warning(
    "The channel layer is in-memory: speak() and interrupt() from other processes cannot reach calls.",
    hint="Set REDIS_URL (channels_redis.core.RedisChannelLayer) when running more than one process.",
    id="mediastream.W004",
)

def _positive_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


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
)


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs) -> list:
    user = getattr(settings, "MEDIASTREAM", {}) or {}
    if not isinstance(user, dict):
        return [Error(f"MEDIASTREAM must be a dict, got {type(user).__name__}.", id="mediastream.E006")]
    errors: list = []
    for key in sorted(set(user) & set(MOVED_TO_VOICECALL)):
        errors.append(
            Error(
                f"MEDIASTREAM['{key}'] is no longer read.",
                hint=f"Set {MOVED_TO_VOICECALL[key]} instead (see voicecall/conf.py).",
                id="mediastream.E005",
            )
        )
    unknown = sorted(set(user) - set(DEFAULTS) - set(MOVED_TO_VOICECALL))
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
        if not _positive_number(value):
            errors.append(
                Error(f"MEDIASTREAM['{name}'] must be a positive number, got {value!r}.", id="mediastream.E001")
            )
    lead = app_settings.PLAYBACK_LEAD_SECONDS
    if isinstance(lead, bool) or not isinstance(lead, (int, float)) or lead < 0:
        errors.append(
            Error(f"MEDIASTREAM['PLAYBACK_LEAD_SECONDS'] must be zero or more, got {lead!r}.", id="mediastream.E001")
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
    stale, heartbeat = app_settings.STALE_STREAM_SECONDS, app_settings.STREAM_HEARTBEAT_SECONDS
    if _positive_number(stale) and _positive_number(heartbeat) and stale <= 2 * heartbeat:
        errors.append(
            Error(
                "MEDIASTREAM['STALE_STREAM_SECONDS'] must be more than twice STREAM_HEARTBEAT_SECONDS, "
                "or the reaper closes live streams between two heartbeats.",
                id="mediastream.E004",
            )
        )
    return errors


@register(Tags.security, deploy=True)
def check_deploy(app_configs=None, **kwargs) -> list:
    errors: list = []
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    default = layers.get("default") if isinstance(layers, dict) else None
    backend = str(default.get("BACKEND", "")) if isinstance(default, dict) else ""
    if backend.endswith("InMemoryChannelLayer"):
        errors.append(W004)
    return errors
