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
