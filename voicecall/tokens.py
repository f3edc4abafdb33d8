"""Per-call stream tokens: a secret in the TwiML, only its hash in the database.

The voice webhook puts a fresh random token in ``<Parameter name="token">``;
the media stream consumer checks the token that comes back in
``start.customParameters`` against the stored hash. Storing only the SHA-256
means a database read does not hand out a working token.

A token opens one stream: admitting a stream clears the stored hash, so the
token is spent (a later start with it is refused) until the voice webhook
mints the next one, which it never does while the call has a live stream.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["TOKEN_BYTES", "mint_stream_token", "hash_stream_token", "verify_stream_token"]

#: 24 random bytes = 192 bits, 32 URL-safe characters.
TOKEN_BYTES = 24


def hash_stream_token(token: str) -> str:
    """SHA-256 hex digest of ``token`` (what :class:`~voicecall.models.Call` stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint_stream_token() -> tuple[str, str]:
    """Return a new ``(token, hash)`` pair; put the token in TwiML, store the hash."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_stream_token(token)


def verify_stream_token(token: str | None, stored_hash: str) -> bool:
    """True if ``token`` hashes to ``stored_hash``; False when either is missing or empty.

    The comparison is constant time.
    """
    if not token or not stored_hash or not isinstance(token, str):
        return False
    expected = stored_hash.strip().lower().encode("utf-8")
    return hmac.compare_digest(hash_stream_token(token).encode("ascii"), expected)
