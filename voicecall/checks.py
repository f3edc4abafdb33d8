"""System checks for voicecall's settings (``manage.py check``, ``--deploy``).

Registered from :meth:`voicecall.apps.VoiceCallConfig.ready`. Every check reads
settings with defaults, so a missing or odd setting is reported, never raised.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import DEFAULTS, TOP_LEVEL_DEFAULTS, voicecall_settings

__all__ = ["W001", "W002", "W003", "check_settings", "check_deploy"]

W001 = Warning(
    "TWILIO_AUTH_TOKEN is empty, so every Twilio webhook and media stream is refused.",
    hint="Set TWILIO_AUTH_TOKEN in your Django settings to your Twilio account's auth token.",
    id="voicecall.W001",
)
W002 = Warning(
    "Twilio signature validation is switched off (VOICECALL['VALIDATE_SIGNATURES'] = False): "
    "anyone can post webhooks and open media streams.",
    hint="Remove VALIDATE_SIGNATURES from VOICECALL (it defaults to True).",
    id="voicecall.W002",
)
W003 = Warning(
    "TWILIO_PUBLIC_BASE_URL is not https: Twilio only opens media streams over wss://.",
    hint="Set TWILIO_PUBLIC_BASE_URL to the https origin Twilio reaches, e.g. 'https://voice.example.com'.",
    id="voicecall.W003",
)

_POSITIVE = ("REPLAY_WINDOW_SECONDS", "MAX_WEBHOOK_BODY_BYTES", "DATABASE_RETRY_AFTER_SECONDS")


def _positive_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def _misplaced_keys(user: dict) -> list:
    """Keys of VOICECALL that are either top-level settings or unknown."""
    errors: list = []
    for key in sorted(set(user) & set(TOP_LEVEL_DEFAULTS)):
        errors.append(
            Error(
                f"VOICECALL['{key}'] is not read.",
                hint=f"Set {key} as a top-level Django setting instead.",
                id="voicecall.E003",
            )
        )
    unknown = sorted(set(user) - set(DEFAULTS) - set(TOP_LEVEL_DEFAULTS))
    if unknown:
        errors.append(
            Warning(
                f"Unknown VOICECALL keys: {', '.join(unknown)}.",
                hint="See voicecall/conf.py for the settings and their defaults.",
                id="voicecall.W005",
            )
        )
    return errors


def _voicecall_dict() -> object:
    return getattr(settings, "VOICECALL", None) or {}


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs) -> list:
    user = _voicecall_dict()
    if not isinstance(user, dict):
        return [Error(f"VOICECALL must be a dict, got {type(user).__name__}.", id="voicecall.E004")]
    errors = _misplaced_keys(user)
    for name in _POSITIVE:
        value = getattr(voicecall_settings, name)
        if not _positive_number(value):
            errors.append(Error(f"VOICECALL['{name}'] must be a positive number, got {value!r}.", id="voicecall.E001"))
    base_url = voicecall_settings.TWILIO_PUBLIC_BASE_URL
    url = urlsplit(str(base_url or ""))
    if url.scheme not in ("http", "https") or not url.hostname:
        errors.append(
            Error(
                f"TWILIO_PUBLIC_BASE_URL must be an http(s) URL, got {base_url!r}.",
                hint="e.g. 'https://voice.example.com'",
                id="voicecall.E002",
            )
        )
    if voicecall_settings.VALIDATE_SIGNATURES and not voicecall_settings.TWILIO_AUTH_TOKEN:
        errors.append(W001)
    body_limit = voicecall_settings.MAX_WEBHOOK_BODY_BYTES
    upload_limit = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None) or float("inf")
    if _positive_number(body_limit) and body_limit > upload_limit:
        errors.append(
            Warning(
                "VOICECALL['MAX_WEBHOOK_BODY_BYTES'] is above DATA_UPLOAD_MAX_MEMORY_SIZE; "
                "Django refuses such bodies first.",
                id="voicecall.W004",
            )
        )
    return errors


@register(Tags.security, deploy=True)
def check_deploy(app_configs=None, **kwargs) -> list:
    if not isinstance(_voicecall_dict(), dict):
        return []  # check_settings reports it
    errors: list = []
    if not voicecall_settings.VALIDATE_SIGNATURES:
        errors.append(W002)
    if urlsplit(str(voicecall_settings.TWILIO_PUBLIC_BASE_URL or "")).scheme != "https":
        errors.append(W003)
    return errors
