"""System checks for call control's settings (``manage.py check``).

Registered from :meth:`voicecall.apps.VoiceCallConfig.ready`. Settings are
read with their defaults, so a wrong value is reported, never raised.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register

from .conf import voicecall_settings
from .fallback import FALLBACK_KEYS, is_destination

__all__ = ["check_call_control"]


def _positive(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def _optional_positive(name: str, value: object) -> list:
    if value is None or _positive(value):
        return []
    return [
        Error(
            f"VOICECALL['{name}'] must be a positive number or None, got {value!r}.",
            hint="None switches it off.",
            id="voicecall.E101",
        )
    ]


def _fallback(name: str, value: object) -> list:
    """A fallback dict: known keys, and a DIAL Twilio can reach."""
    if not isinstance(value, dict):
        return [Error(f"VOICECALL['{name}'] must be a dict, got {type(value).__name__}.", id="voicecall.E102")]
    allowed = FALLBACK_KEYS | ({"MAX_SECONDS"} if name == "VOICEMAIL" else set())
    errors = []
    unknown = sorted(set(value) - allowed)
    if unknown:
        errors.append(
            Error(
                f"VOICECALL['{name}'] has unknown keys: {', '.join(map(str, unknown))}.",
                hint=f"Use {', '.join(sorted(allowed))}.",
                id="voicecall.E102",
            )
        )
    dial = value.get("DIAL")
    if dial and not is_destination(str(dial)):
        errors.append(
            Error(
                f"VOICECALL['{name}']['DIAL'] is not an E.164 number or sip: URI: {dial!r}.",
                hint="e.g. '+14155551234' or 'sip:desk@pbx.example.com'",
                id="voicecall.E103",
            )
        )
    twiml = str(value.get("TWIML") or "").strip()
    if twiml and not twiml.startswith("<"):
        errors.append(Error(f"VOICECALL['{name}']['TWIML'] is not XML.", hint="e.g. '<Response><Hangup/></Response>'", id="voicecall.E103"))
    return errors


@register(Tags.compatibility)
def check_call_control(app_configs=None, **kwargs) -> list:
    if not isinstance(getattr(settings, "VOICECALL", None) or {}, dict):
        return []  # voicecall.checks reports it
    errors: list = []
    base = str(voicecall_settings.TWILIO_API_BASE_URL or "")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        errors.append(
            Error(
                f"TWILIO_API_BASE_URL must be an http(s) origin, got {base!r}.",
                hint="Leave it unset for 'https://api.twilio.com', or point it at a local fake of Twilio's API.",
                id="voicecall.E104",
            )
        )
    rate = voicecall_settings.TWILIO_CALLS_PER_SECOND
    if not _positive(rate):
        errors.append(
            Error(
                f"TWILIO_CALLS_PER_SECOND must be a positive number, got {rate!r}.",
                hint="Your Twilio account's calls-per-second (1 unless Twilio raised it).",
                id="voicecall.E105",
            )
        )
    for name in ("MAX_CALL_SECONDS", "MAX_LIVE_STREAMS", "RING_TIMEOUT_SECONDS"):
        errors += _optional_positive(name, getattr(voicecall_settings, name))
    if not _positive(voicecall_settings.API_TIMEOUT_SECONDS):
        errors.append(Error("VOICECALL['API_TIMEOUT_SECONDS'] must be a positive number.", id="voicecall.E101"))
    for name in ("OVERFLOW", "VOICEMAIL"):
        errors += _fallback(name, getattr(voicecall_settings, name))
    return errors
