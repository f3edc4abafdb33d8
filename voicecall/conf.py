"""voicecall's settings: Twilio's account as top-level settings, the webhooks' own in ``VOICECALL``.

``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and ``TWILIO_PUBLIC_BASE_URL`` are
top-level Django settings, where twilio and django-twilio users already keep
their account. The rest is one ``VOICECALL`` dict merged over :data:`DEFAULTS`.

This is the only module that reads ``django.conf.settings`` for voicecall. The
merged values are cached and cleared on ``setting_changed``, so
``override_settings`` works in tests. Access them as
``voicecall_settings.TWILIO_AUTH_TOKEN`` or ``voicecall_settings.STREAM_PATH``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["TOP_LEVEL_DEFAULTS", "DEFAULTS", "SETTING_NAMES", "voicecall_settings"]

KIB = 1024

#: Top-level Django settings voicecall reads, with their defaults.
TOP_LEVEL_DEFAULTS: dict[str, Any] = {
    # When set, webhooks that name any other AccountSid are refused.
    "TWILIO_ACCOUNT_SID": "",
    # Signs and checks every webhook and media stream; empty refuses them all.
    "TWILIO_AUTH_TOKEN": "",
    # The https origin Twilio reaches (e.g. "https://voice.example.com").
    # Signatures are checked against it and the wss:// stream URL is derived from it.
    "TWILIO_PUBLIC_BASE_URL": "http://127.0.0.1:8000",
    # Origin of Twilio's REST API; Twilio's paths (/2010-04-01/Accounts/...) are
    # appended. Tests and staging point it at a local server.
    "TWILIO_API_BASE_URL": "https://api.twilio.com",
    # Outbound calls started per second, across every process sharing the
    # database (voicecall.pacing). Twilio's default per account is 1.
    "TWILIO_CALLS_PER_SECOND": 1,
}

#: Keys of the ``VOICECALL`` dict, with their defaults.
DEFAULTS: dict[str, Any] = {
    # Signature checks on webhooks and the WebSocket upgrade. Only this setting
    # switches them off; DEBUG never does.
    "VALIDATE_SIGNATURES": True,
    # An identical signed webhook seen again within this window changes nothing.
    "REPLAY_WINDOW_SECONDS": 600,
    # Webhook bodies above this are refused with 413 before parsing.
    "MAX_WEBHOOK_BODY_BYTES": 64 * KIB,
    # A webhook the database cannot serve (its pool timed out, the server is
    # away) answers 503 with this Retry-After; Twilio retries or fails over.
    "DATABASE_RETRY_AFTER_SECONDS": 5,
    # Optional <Say> before <Connect><Stream> in the voice TwiML.
    "GREETING": "",
    # Path of the media stream WebSocket the voice TwiML points Twilio at.
    "STREAM_PATH": "/twilio/media-stream/",
    # --- Call control (voicecall.control) -------------------------------------
    # Seconds the ring may last before Twilio gives up on an outbound call
    # (None: Twilio's default, 60).
    "RING_TIMEOUT_SECONDS": None,
    # A call answered longer ago than this is ended by end_overdue_calls (the
    # goodbye below, then a hang-up); outbound calls also get it plus
    # MAX_CALL_GRACE_SECONDS as Twilio's own TimeLimit. None switches both off.
    "MAX_CALL_SECONDS": 4 * 3600,
    "MAX_CALL_GRACE_SECONDS": 60,
    # Said by Twilio when the limit ends a call ("" hangs up without a word).
    "MAX_CALL_GOODBYE": "This call has reached its time limit. Goodbye.",
    # The voice webhook answers OVERFLOW instead of opening a stream once this
    # many streams are live (None: no limit; capacity checks can add reasons).
    "MAX_LIVE_STREAMS": None,
    # Fallback TwiML: {"SAY": text, "DIAL": number or sip: URI} or {"TWIML": "<Response>..."}.
    # Without DIAL (or TWIML) the call is hung up after the SAY.
    "OVERFLOW": {"SAY": "All our lines are busy. Please call again later."},
    # What send_to_voicemail plays: SAY, then a <Record> of up to MAX_SECONDS
    # (the recording's callbacks come to the recording status webhook); or TWIML.
    "VOICEMAIL": {"SAY": "Please leave a message after the tone.", "MAX_SECONDS": 120},
    # Timeout of each REST request to Twilio, in seconds.
    "API_TIMEOUT_SECONDS": 10.0,
}

#: Every Django setting whose change clears the cache.
SETTING_NAMES = frozenset({"VOICECALL", *TOP_LEVEL_DEFAULTS})


class VoiceCallSettings:
    """Lazy view of the top-level Twilio settings and ``settings.VOICECALL`` over their defaults."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        user = getattr(settings, "VOICECALL", None) or {}
        if not isinstance(user, dict):
            raise ImproperlyConfigured(f"VOICECALL must be a dict, got {type(user).__name__}.")
        merged = {name: getattr(settings, name, default) for name, default in TOP_LEVEL_DEFAULTS.items()}
        merged.update(DEFAULTS)
        # Top-level names are never taken from VOICECALL (checks.py says so).
        merged.update({key: value for key, value in user.items() if key not in TOP_LEVEL_DEFAULTS})
        return merged

    def as_dict(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = self._load()
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.as_dict()[name]
        except KeyError:
            raise AttributeError(f"voicecall has no setting {name!r}") from None

    def reload(self) -> None:
        self._cache = None


voicecall_settings = VoiceCallSettings()


@receiver(setting_changed)
def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting in SETTING_NAMES:
        voicecall_settings.reload()
