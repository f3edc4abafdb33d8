"""Test settings: the project settings against the real local PostgreSQL.

``DATABASE_URL`` and ``REDIS_URL`` may point elsewhere; the in-process channel
layer stays in-memory (fast, isolated per test); tests that cross process
boundaries start daphne with ``REDIS_URL`` and use real Redis.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
os.environ.pop("REDIS_URL", None)

from settings import *  # noqa: E402,F401,F403
from settings import MEDIASTREAM as _BASE_MEDIASTREAM  # noqa: E402
from settings import VOICECALL as _BASE_VOICECALL  # noqa: E402

SECRET_KEY = "tests-secret-key-not-for-production-0123456789abcdef"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

TWILIO_PUBLIC_BASE_URL = "https://voice.example.com"
TWILIO_ACCOUNT_SID = "AC" + "0" * 32
TWILIO_AUTH_TOKEN = "test-auth-token-12345"
VOICECALL = {**_BASE_VOICECALL, "VALIDATE_SIGNATURES": True}

MEDIASTREAM = {
    **_BASE_MEDIASTREAM,
    "TTS": {"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {}},
    "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.discard.DiscardBackend", "OPTIONS": {}},
    # Test servers stop at once (their streams closed as after a grace); tests/test_draining.py drains.
    "DRAIN_GRACE_SECONDS": 0,
}

# pytest-django creates and drops this database; TEST_DATABASE_NAME lets two
# test runs on one server stay out of each other's way.
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_mediastream")}  # noqa: F405
