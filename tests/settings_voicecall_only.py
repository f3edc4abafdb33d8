"""Settings with voicecall installed and mediastream not (tests/test_app_boundary.py).

An in-memory SQLite database keeps the fresh interpreter that uses them fast and
away from the PostgreSQL test databases.
"""

from tests.settings import (  # noqa: F401
    DATA_UPLOAD_MAX_MEMORY_SIZE,
    DEFAULT_AUTO_FIELD,
    MIDDLEWARE,
    PASSWORD_HASHERS,
    SECRET_KEY,
    TEMPLATES,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_PUBLIC_BASE_URL,
    USE_TZ,
    VOICECALL,
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "voicecall",
]
ROOT_URLCONF = "tests.urls_voicecall_only"  # the admin and voicecall's webhooks
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
