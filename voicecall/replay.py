"""Replay protection for signed webhooks, shared by all processes through the database.

A valid signature proves Twilio sent a request once, not that it is new:
Twilio retries, and anyone who saw a request can send it again. After the
signature check, the request gets a key: the sha256 of exactly what the
signature covers (:func:`voicecall.twilio_auth.signed_material`), so every body
that validates under one signature (a duplicated pair, ``a=bc`` for ``ab=c``)
is the same request. The first request with a key runs its side effects and
stores its response in a :class:`~voicecall.models.WebhookReceipt`; the same key
within ``VOICECALL["REPLAY_WINDOW_SECONDS"]`` gets that stored response back and
changes nothing. After the window a replay is handled again, which the
handlers make harmless: status callbacks apply in SequenceNumber order, and the
voice webhook never mints a new stream token while the call has a live stream.

The key column is unique, so of two identical requests arriving at once in
different daphne processes only one inserts its receipt; the other waits for
that transaction and then answers from the receipt.

Stored bodies are encrypted with Fernet (the voice TwiML holds a stream
token) under a key derived from ``SECRET_KEY``. If a body can no longer be
decrypted (``SECRET_KEY`` changed, or differs between processes), the request
is handled again instead: for the voice webhook that mints a new token, which
keeps the call up, where empty TwiML would hang it up.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from .conf import voicecall_settings
from .logsafe import sanitize
from .models import WebhookReceipt
from .twilio_auth import signed_material

__all__ = ["PRUNE_EVERY", "replay_key", "handle_once", "prune_expired"]

logger = logging.getLogger(__name__)

#: Expired receipts are deleted when a new receipt's id is a multiple of this.
PRUNE_EVERY = 64

_KEY_SALT = "voicecall.replay.WebhookReceipt.body"


def replay_key(url: str, params: Mapping[str, Any] | str | None) -> str:
    """sha256 hex of what a Twilio signature covers for ``url`` and ``params``."""
    return hashlib.sha256(signed_material(url, params).encode("utf-8", "surrogatepass")).hexdigest()


def _fernet() -> Fernet:
    """Fernet for receipt bodies; its key is an HMAC-SHA256 derived from SECRET_KEY."""
    key = salted_hmac(_KEY_SALT, "fernet-key", algorithm="sha256").digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _window_start(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(seconds=int(voicecall_settings.REPLAY_WINDOW_SECONDS))


def prune_expired(now: datetime | None = None) -> int:
    """Delete receipts older than the replay window; return how many were deleted."""
    deleted, _ = WebhookReceipt.objects.filter(created_at__lt=_window_start(now)).delete()
    return deleted


def _claim(key: str, path: str) -> tuple[WebhookReceipt, bool]:
    """The receipt for ``key``, locked, and whether this request is to be handled (not a replay).

    The first request with a key inserts its receipt (one INSERT in a
    savepoint). A key that exists is a replay if its receipt is within the
    window; an expired one is taken over, with its clock restarted, as a new
    request. Another process's receipt for the same key, still uncommitted,
    makes the INSERT wait for its commit and then fail, so that request is
    answered from the receipt.
    """
    try:
        with transaction.atomic():
            return WebhookReceipt.objects.create(key=key, path=path[:200]), True
    except IntegrityError:
        pass
    receipt = WebhookReceipt.objects.select_for_update().filter(key=key).first()
    if receipt is None:  # expired and pruned in between: the key is free again, unless a twin takes it first
        try:
            with transaction.atomic():
                return WebhookReceipt.objects.create(key=key, path=path[:200]), True
        except IntegrityError:
            receipt = WebhookReceipt.objects.select_for_update().get(key=key)
            return receipt, False
    if receipt.created_at < _window_start():
        receipt.created_at = timezone.now()
        receipt.path = path[:200]
        return receipt, True
    return receipt, False


def _store(receipt: WebhookReceipt, response: HttpResponse) -> None:
    receipt.status_code = response.status_code
    receipt.content_type = response.get("Content-Type", "")[:100]
    receipt.body = _fernet().encrypt(bytes(response.content)).decode("ascii")
    receipt.save(update_fields=["status_code", "content_type", "body", "created_at", "path"])


def _replayed(receipt: WebhookReceipt) -> HttpResponse | None:
    """The stored response of ``receipt``, or None if it cannot be decrypted."""
    try:
        body = _fernet().decrypt(receipt.body.encode("ascii"))
    except (InvalidToken, ValueError):
        logger.warning(
            "Cannot decrypt the stored response for replayed webhook %s (SECRET_KEY changed, or not "
            "the same in every process?); handling it again",
            sanitize(receipt.path),
        )
        return None
    return HttpResponse(body, content_type=receipt.content_type or None, status=receipt.status_code)


def handle_once(
    key: str, path: str, handler: Callable[[], HttpResponse]
) -> tuple[HttpResponse, bool]:
    """Run ``handler`` once per ``key`` within the replay window; return ``(response, replayed)``.

    ``handler`` runs inside the same database transaction as the receipt
    insert: if it raises, the receipt is rolled back too and a retry is
    processed normally.
    """
    with transaction.atomic():
        receipt, new = _claim(key, path)
        if not new:
            replayed = _replayed(receipt)
            if replayed is not None:
                logger.info("Replayed webhook %s answered from its receipt", sanitize(path))
                return replayed, True
        response = handler()
        _store(receipt, response)
        if receipt.pk % PRUNE_EVERY == 0:
            prune_expired()
    return response, False
