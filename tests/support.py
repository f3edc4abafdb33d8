"""Helpers every test module shares: settings overrides and the speech-extra skip."""

from __future__ import annotations

import importlib.util

import pytest
from django.conf import settings
from django.test import override_settings

__all__ = ["mediastream_settings", "requires_speech", "SPEECH_MISSING"]


def mediastream_settings(**overrides):
    """``override_settings`` for a few ``MEDIASTREAM`` keys over the test settings (decorator or ``with``)."""
    return override_settings(MEDIASTREAM={**settings.MEDIASTREAM, **overrides})


def _speech_missing() -> str:
    missing = [name for name in ("piper", "faster_whisper") if importlib.util.find_spec(name) is None]
    if not missing:
        return ""
    return f"the speech extra is not installed ({', '.join(missing)} missing): pip install -e '.[speech]'"


#: Why speech tests cannot run here ("" when they can).
SPEECH_MISSING = _speech_missing()

#: Marks a test (or, as ``pytestmark``, a module) that needs the offline speech models.
requires_speech = pytest.mark.skipif(bool(SPEECH_MISSING), reason=SPEECH_MISSING or "speech extra installed")


def voicecall_overrides(**overrides):
    """``override_settings`` for voicecall (decorator or ``with``).

    Top-level names (``TWILIO_AUTH_TOKEN``, ``TWILIO_PUBLIC_BASE_URL``, ...) are
    overridden as themselves, the rest as keys of ``VOICECALL`` over the test settings.
    """
    from voicecall.conf import TOP_LEVEL_DEFAULTS

    top_level = {name: value for name, value in overrides.items() if name in TOP_LEVEL_DEFAULTS}
    nested = {name: value for name, value in overrides.items() if name not in TOP_LEVEL_DEFAULTS}
    return override_settings(**top_level, VOICECALL={**getattr(settings, "VOICECALL", {}), **nested})


__all__ += ["voicecall_overrides"]
