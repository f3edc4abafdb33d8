"""What a server checks once as it starts: the database and the channel layer answer.

An unreachable database or Redis is then one clear log line at startup,
naming the setting to fix, instead of a traceback when the first call comes
in. An in-memory channel layer gets its one-line warning here too: it works
in this process only. The probes run in a background thread, so a slow
network never delays the server's start, once daphne serves (not in a process
that only imports the application), and they only report: the server starts
either way and each part recovers when its service comes back.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass

__all__ = [
    "Finding",
    "describe_redis_host",
    "check_database",
    "check_channel_layer",
    "report",
    "start",
    "start_when_serving",
]

logger = logging.getLogger(__name__)

#: Seconds a probe waits for a connection.
CONNECT_TIMEOUT = 3.0

IN_MEMORY_WARNING = (
    "The channel layer is in-memory: only code in this process reaches its calls "
    "(manage.py speak, workers and other servers need a Redis layer: CHANNEL_LAYERS with "
    "channels_redis.core.RedisChannelLayer, REDIS_URL in the demo settings)."
)


@dataclass(frozen=True)
class Finding:
    """One problem found at startup, as the one line that is logged."""

    level: int
    message: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _describe_database(alias: str) -> str:
    from django.db import connections

    try:
        connection = connections[alias]
        described = f"{connection.vendor} database {connection.settings_dict.get('NAME')!s}"
        host = connection.settings_dict.get("HOST")
    except Exception:
        return f"{alias!r} database"
    if host:
        described += f" at {host}:{connection.settings_dict.get('PORT') or 'its default port'}"
    return described


def _probe_connection(alias: str):
    """A connection of its own to ``alias``'s database, outside any pool (a probe must not start one:
    a pool whose database is down retries, and logs, in the background until it is back)."""
    from django.db import connections

    configured = connections[alias]
    settings_dict = copy.deepcopy(configured.settings_dict)
    settings_dict.get("OPTIONS", {}).pop("pool", None)
    return type(configured)(settings_dict, alias=alias)


def check_database(alias: str = "default") -> list[Finding]:
    from voicecall.models import Call, MediaStream

    probe = None
    try:
        probe = _probe_connection(alias)
        probe.ensure_connection()
        tables = set(probe.introspection.table_names())
    except Exception as exc:
        return [
            Finding(
                logging.ERROR,
                f"Cannot reach the {_describe_database(alias)} ({_first_line(exc)}): "
                "calls are refused until it answers; check DATABASES (DATABASE_URL in the demo).",
            )
        ]
    finally:
        if probe is not None:
            try:
                probe.close()
            except Exception:
                pass
    missing = [model._meta.db_table for model in (Call, MediaStream) if model._meta.db_table not in tables]
    if missing:
        return [
            Finding(
                logging.ERROR,
                f"The {_describe_database(alias)} has no call tables ({', '.join(missing)}): run manage.py migrate.",
            )
        ]
    return []


def _ping_redis(host: dict) -> None:
    import redis

    options = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": CONNECT_TIMEOUT}
    if "address" in host:
        client = redis.Redis.from_url(host["address"], **options)
    elif "master_name" in host:
        return  # Sentinel: the layer finds the master itself
    else:
        client = redis.Redis(**{key: value for key, value in host.items() if key not in options}, **options)
    try:
        client.ping()
    finally:
        client.close()


def describe_redis_host(host: dict) -> str:
    """A channels_redis host entry as it can be logged (never its password)."""
    if "address" in host:
        address = str(host["address"])
        scheme, sep, rest = address.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else address  # no password in the log
    return f"{host.get('host', 'localhost')}:{host.get('port', 6379)}"


def check_channel_layer() -> list[Finding]:
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    try:
        layer = get_channel_layer()
    except Exception as exc:
        return [Finding(logging.ERROR, f"The channel layer cannot be built ({_first_line(exc)}): check CHANNEL_LAYERS.")]
    if layer is None:
        return [Finding(logging.ERROR, "No channel layer is configured: check CHANNEL_LAYERS.")]
    if isinstance(layer, InMemoryChannelLayer):
        return [Finding(logging.WARNING, IN_MEMORY_WARNING)]
    findings = []
    for host in getattr(layer, "hosts", None) or []:
        if not isinstance(host, dict):
            continue
        try:
            _ping_redis(host)
        except Exception as exc:
            findings.append(
                Finding(
                    logging.ERROR,
                    f"Cannot reach Redis at {describe_redis_host(host)} ({_first_line(exc)}): calls still stream, "
                    "but speak() and interrupt() from other processes cannot reach them until it is back; "
                    "check CHANNEL_LAYERS (REDIS_URL in the demo).",
                )
            )
    return findings


def report() -> list[Finding]:
    """Probe both and log each problem as one line; return what was found."""
    findings = check_database() + check_channel_layer()
    for finding in findings:
        logger.log(finding.level, finding.message)
    if not findings:
        logger.info("Startup checks passed: the database and the channel layer answer")
    return findings


def start() -> threading.Thread:
    """Run :func:`report` in a background thread (never delays the server's start)."""
    thread = threading.Thread(target=_report_quietly, name="mediastream-preflight", daemon=True)
    thread.start()
    return thread


def start_when_serving() -> None:
    """:func:`start` once daphne's reactor runs, so never in a process that only imports the
    application (a test, ``manage.py check``); at once when daphne is not installed."""
    from .startup import call_when_serving

    if not call_when_serving(start):
        start()


def _report_quietly() -> None:
    try:
        report()
    except Exception:  # a probe must never take the server down
        logger.exception("Startup checks of the database and channel layer failed")
