"""What the management commands say when something outside them fails: at most three lines, no traceback.

Each function turns one kind of failure (the channel layer, the database, the
server under ``simulate_call``) into a :class:`CommandError` that says what
happened and what to do; Django prints it and exits non-zero.
"""

from __future__ import annotations

import logging

from django.core.management.base import CommandError

__all__ = [
    "LAYER_ERRORS",
    "layer_unreachable",
    "require_shared_layer",
    "no_stream_answered",
    "database_failure",
    "first_line",
    "quiet_library_logs",
]

#: Libraries that log each retry while their server is away; in a command its one message says it.
NOISY_LOGGERS = ("psycopg.pool", "twilio.http_client")


def quiet_library_logs() -> None:
    """Keep only the errors of :data:`NOISY_LOGGERS` for the rest of this command's process."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _redis_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return ()
    return (RedisError,)


#: What a channel layer raises when its server is down or unreachable.
LAYER_ERRORS: tuple[type[BaseException], ...] = (*_redis_errors(), OSError, TimeoutError)


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]


def _layer_hosts() -> str:
    from channels.layers import get_channel_layer

    from ..preflight import describe_redis_host

    entries = getattr(get_channel_layer(), "hosts", None) or []
    hosts = [describe_redis_host(host) for host in entries if isinstance(host, dict)]
    return ", ".join(hosts) or "its server"


def layer_unreachable(exc: BaseException) -> CommandError:
    return CommandError(
        f"Cannot reach the channel layer's Redis at {_layer_hosts()} ({first_line(exc)}).\n"
        "Start Redis, or point CHANNEL_LAYERS (REDIS_URL in the demo settings) at the one the server uses."
    )


def require_shared_layer() -> None:
    """Commands that talk to a live call need a layer the server also uses; the in-memory one never is."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        raise CommandError(
            "This process has the in-memory channel layer, which no other process can reach: "
            "the server's calls cannot hear this command.\n"
            "Give the server and this command the same Redis layer: set REDIS_URL (demo settings) "
            "or CHANNEL_LAYERS to channels_redis.core.RedisChannelLayer."
        )


def no_stream_answered(call_sid: str) -> CommandError:
    return CommandError(
        f"No live stream answered for {call_sid}: the call is not streaming now, or the server uses another "
        "channel layer.\nCheck the CallSid in the admin, and that the server and this command share "
        "CHANNEL_LAYERS (REDIS_URL and prefix)."
    )


def database_failure(exc: BaseException) -> CommandError:
    """A DatabaseError: the server is down, or the tables are missing."""
    from django.db import connection

    name = connection.settings_dict.get("NAME")
    host = connection.settings_dict.get("HOST") or "local"
    text = str(exc).lower()
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return CommandError(
            f"The {connection.vendor} database {name!s} has no call tables yet ({first_line(exc)}).\nRun manage.py migrate."
        )
    return CommandError(
        f"Cannot use the {connection.vendor} database {name!s} ({host}): {first_line(exc)}.\n"
        "Start it, or fix DATABASES (DATABASE_URL in the demo settings)."
    )
