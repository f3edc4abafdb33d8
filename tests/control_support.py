"""Helpers for the call-control tests: a fake Twilio the settings point at, signed webhook posts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlencode

from django.conf import settings
from django.test import override_settings
from twilio.request_validator import RequestValidator

from .fake_twilio import FakeTwilio

__all__ = ["PUBLIC", "FROM", "TO", "fake_twilio", "signed_post", "wait_until"]

T = TypeVar("T")

PUBLIC = "https://voice.example.com"
FROM = "+15005550006"  # Twilio's test "From" that is valid
TO = "+14155551212"


@contextmanager
def fake_twilio(*, webhook_origin: str | None = None, **kwargs) -> Iterator[FakeTwilio]:
    """A running FakeTwilio for the test settings' account, with TWILIO_API_BASE_URL pointing at it."""
    fake = FakeTwilio(
        account_sid=settings.TWILIO_ACCOUNT_SID, auth_token=settings.TWILIO_AUTH_TOKEN,
        public_url=PUBLIC, webhook_origin=webhook_origin, **kwargs,
    )
    with fake, override_settings(TWILIO_API_BASE_URL=fake.origin, TWILIO_CALLS_PER_SECOND=1000):
        yield fake


def signed_post(client, path: str, params: dict[str, str]):
    """POST ``params`` to ``path`` signed as Twilio signs (public URL + params)."""
    signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(PUBLIC + path, params)
    return client.post(
        path, urlencode(params), content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature
    )


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll a (database) predicate until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
