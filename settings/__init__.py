"""Django project settings, configured from the environment.

Every value has a zero-config default (SQLite, in-memory channel layer) so
``manage.py runserver`` works on a fresh clone; production sets
``DATABASE_URL`` and ``REDIS_URL``. See README.md for the full list.
"""

import logging
import os
from pathlib import Path

import dj_database_url
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
logger = logging.getLogger(__name__)


def load_env_file(path: Path) -> None:
    """KEY=VALUE lines from a local, uncommitted file (bin/run writes the demo's auth token there).

    Real environment variables win.
    """
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            os.environ.setdefault(key.strip(), value.strip())


load_env_file(BASE_DIR / ".env.local")


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# Without SECRET_KEY each process invents one: fine for the one-process demo,
# wrong for several processes (webhook replay receipts and admin sessions are
# signed with it), so production sets it.
SECRET_KEY = os.environ.get("SECRET_KEY") or get_random_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "voicecall",
    "mediastream",
]
if env_bool("DEMO_ECHO_BOT", False):
    # The worked example from the README: greets callers and repeats what it hears.
    INSTALLED_APPS.append("examples.echobot")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "settings.urls"
# The app's ready ASGI application (settings/asgi.py serves the same for `daphne settings.asgi:application`).
ASGI_APPLICATION = "mediastream.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]



def database_settings(url: str) -> dict:
    """``DATABASES["default"]`` for ``DATABASE_URL``, with pooled connections on PostgreSQL.

    Under ASGI each HTTP request runs on a thread of its own, so persistent
    connections (``CONN_MAX_AGE``) would leave one session per request
    thread open until it is garbage-collected: a ramp of calls runs PostgreSQL
    out of sessions. PostgreSQL gets psycopg's pool instead: at most
    ``DB_POOL_MAX_SIZE`` sessions per process, health-checked before each use
    (a restarted database costs no request a dead session), waited for at most
    ``DB_POOL_TIMEOUT`` seconds. ``DB_POOL=0`` turns it off (then
    ``CONN_MAX_AGE`` applies). Connection attempts give up after
    ``DB_CONNECT_TIMEOUT`` seconds.
    """
    database = dj_database_url.parse(
        url, conn_max_age=int(os.environ.get("CONN_MAX_AGE", "0")), conn_health_checks=True
    )
    if database["ENGINE"] == "django.db.backends.postgresql":
        options = database.setdefault("OPTIONS", {})
        options.setdefault("connect_timeout", int(os.environ.get("DB_CONNECT_TIMEOUT", "5")))
        if env_bool("DB_POOL", True):
            database["CONN_MAX_AGE"] = 0  # the pool keeps the sessions
            options["pool"] = {
                "min_size": int(os.environ.get("DB_POOL_MIN_SIZE", "2")),
                "max_size": int(os.environ.get("DB_POOL_MAX_SIZE", "10")),
                "timeout": float(os.environ.get("DB_POOL_TIMEOUT", "3")),
            }
    return database


DATABASES = {"default": database_settings(os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, which kills
                # channels-redis' 5 s BZPOPMIN on every idle consumer, and caps a
                # pool at 100 connections: a ramp of 50 calls/s (each registering
                # its groups) needs more at its peak ("Too many connections").
                "hosts": [{"address": REDIS_URL, "socket_timeout": None, "max_connections": 1000}],
                "capacity": 200,
                "expiry": 60,
                # Must outlive the longest call, or the call stops hearing commands.
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

# Twilio posts form bodies of a few KiB; anything bigger is not Twilio.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024

# Twilio's account and the https origin Twilio reaches, as top-level settings;
# defaults and documentation live in voicecall/conf.py.
TWILIO_ACCOUNT_SID = os.environ.get("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN", "")
TWILIO_PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000")

# The webhooks (voicecall/conf.py).
VOICECALL = {
    "VALIDATE_SIGNATURES": env_bool("TWILIO_VALIDATE_SIGNATURES", True),
    "GREETING": os.environ.get("MEDIASTREAM_GREETING", ""),
}

# The media streams (mediastream/conf.py).
MEDIASTREAM = {
    "TRUSTED_PROXIES": env_list("TRUSTED_PROXIES"),
}
if env_bool("DEMO_AGENT", False):
    # The embedded restaurant agent (no network, no key): opening hours, table bookings, keypad 1 and 2.
    MEDIASTREAM["AGENT"] = {
        "BACKEND": "mediastream.agents.scripted.ScriptedAgent",
        "OPTIONS": {"SCRIPT": "mediastream.agents.demo"},
    }
if os.environ.get("MEDIASTREAM_TTS_BACKEND"):
    MEDIASTREAM["TTS"] = {"BACKEND": os.environ["MEDIASTREAM_TTS_BACKEND"], "OPTIONS": {}}
if os.environ.get("MEDIASTREAM_TRANSCRIPTION_BACKEND"):
    MEDIASTREAM["TRANSCRIPTION"] = {
        "BACKEND": os.environ["MEDIASTREAM_TRANSCRIPTION_BACKEND"],
        "OPTIONS": {},
    }

# One handler, on the root logger: Django's own console handler (DEBUG only) is dropped, or every
# django.* line would print twice (once there, once through root).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": [], "level": "INFO"},
        # daphne's own lines ("Listening on ...") and runserver's request lines.
        "daphne": {"level": os.environ.get("DAPHNE_LOG_LEVEL", "WARNING")},
        "django.channels.server": {"level": os.environ.get("DAPHNE_LOG_LEVEL", "WARNING")},
    },
}
