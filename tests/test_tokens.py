"""Per-call stream tokens: random enough, stored only as a hash, checked in constant time."""

import hashlib
import re

import pytest

from voicecall.tokens import hash_stream_token, mint_stream_token, verify_stream_token


def test_minted_token_is_urlsafe_192_bits_and_hash_is_its_sha256():
    token, token_hash = mint_stream_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)  # 24 random bytes, base64url
    assert token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in token_hash


def test_every_mint_gives_a_new_token():
    tokens = {mint_stream_token()[0] for _ in range(50)}
    assert len(tokens) == 50


def test_verify_accepts_the_token_and_nothing_else():
    token, token_hash = mint_stream_token()
    assert verify_stream_token(token, token_hash)
    assert verify_stream_token(token, token_hash.upper())
    assert not verify_stream_token(token + "x", token_hash)
    assert not verify_stream_token(token_hash, token_hash)  # the hash is not a token


@pytest.mark.parametrize(
    ("token", "stored"),
    [(None, "abc"), ("", "abc"), ("tok", ""), (None, ""), ("tok", "ünïcode")],
)
def test_verify_refuses_missing_or_odd_values(token, stored):
    assert verify_stream_token(token, stored) is False


def test_hash_is_deterministic():
    assert hash_stream_token("abc") == hashlib.sha256(b"abc").hexdigest()
