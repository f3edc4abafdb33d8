"""What voicecall's call-control commands share: quiet Twilio logging and short, clear errors.

A command prints at most three lines when it fails (Django's "CommandError:"
line, what happened and what to change) and exits non-zero; never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.core.management.base import CommandError
from django.db import DatabaseError

from ..control import CallControlError
from ..logsafe import sanitize

__all__ = ["quiet_twilio_logging", "run_control"]

T = TypeVar("T")

#: The twilio library logs every request's method, URL and headers at INFO.
TWILIO_LOGGERS = ("twilio.http_client", "twilio.async_http_client")


def quiet_twilio_logging() -> None:
    for name in TWILIO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_control(operation: Callable[[], T]) -> T:
    """Run a call-control operation; its failures become a two-line CommandError."""
    quiet_twilio_logging()
    try:
        return operation()
    except CallControlError as exc:
        raise CommandError(f"{exc}\n{exc.hint}") from None
    except (ValueError, TypeError) as exc:
        raise CommandError(sanitize(exc, 300)) from None
    except DatabaseError as exc:
        raise CommandError(
            f"The database is not reachable: {sanitize(exc, 200)}\nCheck DATABASE_URL and that migrations ran (manage.py migrate)."
        ) from None
