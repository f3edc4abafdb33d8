"""Twilio signatures: known-answer vectors, URL building from TWILIO_PUBLIC_BASE_URL, refusals."""

from urllib.parse import urlencode

import pytest
from django.test import RequestFactory, override_settings
from twilio.request_validator import RequestValidator

from voicecall.logsafe import sanitize
from voicecall.twilio_auth import (
    SignatureCheck,
    public_url_for,
    public_websocket_url_for,
    validate_http_request,
    validate_websocket_upgrade,
)

from .support import voicecall_overrides

DOC_PATH = "/myapp.php?foo=1&bar=2"
DOC_SIGNATURE = "L/OH5YylLD5NRKLltdqwSvS0BnU="
WS_SIGNATURE = "7PR3qMkpDyEJtMrVOY/LDyNq8J8="  # wss://example.com/media, token 12345
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}


def form_post(path, params, **headers):
    return RequestFactory().post(path, params, content_type="application/x-www-form-urlencoded", **headers)


def urlencoded(params):
    return urlencode(params)


# --- public URLs -------------------------------------------------------------------


def test_public_url_comes_from_public_base_url():
    assert public_url_for("/twilio/voice/") == "https://voice.example.com/twilio/voice/"
    assert public_url_for("/twilio/voice", "a=1&b=2") == "https://voice.example.com/twilio/voice?a=1&b=2"
    assert public_websocket_url_for("/twilio/media-stream/") == "wss://voice.example.com/twilio/media-stream/"


@voicecall_overrides(TWILIO_PUBLIC_BASE_URL="https://user:pw@example.com:8443/app/")
def test_public_url_keeps_port_and_path_prefix_and_drops_credentials():
    assert public_url_for("/twilio/voice/") == "https://example.com:8443/app/twilio/voice/"
    # A request path that already carries the prefix (FORCE_SCRIPT_NAME) is not prefixed twice.
    assert public_url_for("/app/twilio/voice/") == "https://example.com:8443/app/twilio/voice/"
    assert public_url_for("/application/x") == "https://example.com:8443/app/application/x"
    assert public_websocket_url_for("/media?x=1") == "wss://example.com:8443/app/media"


@voicecall_overrides(TWILIO_PUBLIC_BASE_URL="http://127.0.0.1:8000")
def test_http_base_gives_ws_scheme():
    assert public_websocket_url_for("/twilio/media-stream/") == "ws://127.0.0.1:8000/twilio/media-stream/"


def test_host_header_does_not_choose_the_signed_url():
    # Signed for the attacker's host, sent with that Host header: still checked against voice.example.com.
    params = {"CallSid": "CA1"}
    validator = RequestValidator("test-auth-token-12345")
    signature = validator.compute_signature("https://evil.example/twilio/voice/", params)
    request = RequestFactory().post(
        "/twilio/voice/",
        urlencoded(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_HOST="evil.example",
        HTTP_X_FORWARDED_HOST="evil.example",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )
    check = validate_http_request(request)
    assert not check.ok
    assert "https://voice.example.com/twilio/voice/" in check.reason


# --- HTTP known answers ----------------------------------------------------------------


@voicecall_overrides(TWILIO_AUTH_TOKEN="12345", TWILIO_PUBLIC_BASE_URL="https://example.com")
def test_twilio_documented_http_vector():
    request = form_post(DOC_PATH, urlencoded(DOC_PARAMS), HTTP_X_TWILIO_SIGNATURE=DOC_SIGNATURE)
    assert validate_http_request(request) == SignatureCheck(True, "valid signature")


@voicecall_overrides(TWILIO_AUTH_TOKEN="12345", TWILIO_PUBLIC_BASE_URL="https://example.com")
def test_http_vector_fails_when_a_param_changes():
    params = {**DOC_PARAMS, "Digits": "9999"}
    request = form_post(DOC_PATH, urlencoded(params), HTTP_X_TWILIO_SIGNATURE=DOC_SIGNATURE)
    check = validate_http_request(request)
    assert not check.ok
    assert check.reason.startswith("invalid signature for https://example.com/myapp.php?foo=...&bar=...")


@voicecall_overrides(TWILIO_AUTH_TOKEN="12345", TWILIO_PUBLIC_BASE_URL="https://mycompany.com")
def test_json_body_vector_with_body_sha256():
    body_hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    request = RequestFactory().post(
        f"/myapp.php?foo=1&bar=2&bodySHA256={body_hash}",
        '{"property": "value", "boolean": true}',
        content_type="application/json",
        HTTP_X_TWILIO_SIGNATURE="a9nBmqA0ju/hNViExpshrM61xv4=",
    )
    assert validate_http_request(request).ok
    tampered = RequestFactory().post(
        f"/myapp.php?foo=1&bar=2&bodySHA256={body_hash}",
        '{"property": "other", "boolean": true}',
        content_type="application/json",
        HTTP_X_TWILIO_SIGNATURE="a9nBmqA0ju/hNViExpshrM61xv4=",
    )
    assert not validate_http_request(tampered).ok


def test_missing_http_signature_is_refused():
    check = validate_http_request(form_post("/twilio/voice/", "CallSid=CA1"))
    assert check == SignatureCheck(False, "missing X-Twilio-Signature header")


# --- WebSocket upgrade known answers ------------------------------------------------------


ws_vectors = voicecall_overrides(TWILIO_AUTH_TOKEN="12345", TWILIO_PUBLIC_BASE_URL="https://example.com")


@ws_vectors
@pytest.mark.parametrize("path", ["/media", "/media/"])
@pytest.mark.parametrize("signature", ["7PR3qMkpDyEJtMrVOY/LDyNq8J8=", "T+WBXwUXC0/CyoZ1DA+p9ilZORs="])
def test_websocket_vectors_with_and_without_trailing_slash(path, signature):
    # 7PR3… signs wss://example.com/media, T+WB… signs wss://example.com/media/.
    check = validate_websocket_upgrade(path, b"", {"x-twilio-signature": signature})
    assert check == SignatureCheck(True, "valid signature")


@ws_vectors
def test_websocket_header_name_is_case_insensitive():
    assert validate_websocket_upgrade("/media", b"", {"X-Twilio-Signature": WS_SIGNATURE}).ok


@ws_vectors
def test_websocket_accepts_explicit_default_port():
    signature = RequestValidator("12345").compute_signature("wss://example.com:443/media", {})
    assert validate_websocket_upgrade("/media", b"", {"x-twilio-signature": signature}).ok


@ws_vectors
def test_websocket_https_signature_is_not_the_wss_one():
    signature = RequestValidator("12345").compute_signature("https://example.com/media", {})
    assert not validate_websocket_upgrade("/media", b"", {"x-twilio-signature": signature}).ok


@ws_vectors
def test_websocket_query_pairs_are_signed_as_params():
    signature = RequestValidator("12345").compute_signature("wss://example.com/media", {"a": "1"})
    assert validate_websocket_upgrade("/media", b"a=1", {"x-twilio-signature": signature}).ok
    assert not validate_websocket_upgrade("/media", b"a=2", {"x-twilio-signature": signature}).ok


@ws_vectors
def test_websocket_refusal_reason_leaks_neither_query_values_nor_token():
    check = validate_websocket_upgrade("/media", b"secret=hunter2", {"x-twilio-signature": "bogus"})
    assert not check.ok
    assert "hunter2" not in check.reason and "12345" not in check.reason
    assert "wss://example.com/media?secret=..." in check.reason


@ws_vectors
def test_websocket_wrong_path_or_missing_header_is_refused():
    assert not validate_websocket_upgrade("/other", b"", {"x-twilio-signature": WS_SIGNATURE}).ok
    missing = validate_websocket_upgrade("/media", b"", {})
    assert missing == SignatureCheck(False, "missing x-twilio-signature header")


@voicecall_overrides(TWILIO_AUTH_TOKEN="12345", TWILIO_PUBLIC_BASE_URL="http://example.com:8000")
def test_websocket_on_plain_http_base_uses_ws_url():
    signature = RequestValidator("12345").compute_signature("ws://example.com:8000/media", {})
    assert validate_websocket_upgrade("/media", b"", {"x-twilio-signature": signature}).ok


# --- Configuration ---------------------------------------------------------------------------


@voicecall_overrides(VALIDATE_SIGNATURES=False)
def test_disabled_validation_accepts_unsigned():
    expected = SignatureCheck(True, "signature validation disabled")
    assert validate_websocket_upgrade("/media", b"", {}) == expected
    assert validate_http_request(form_post("/twilio/voice/", "CallSid=CA1")) == expected


@voicecall_overrides(TWILIO_AUTH_TOKEN="")
def test_empty_auth_token_refuses_even_a_matching_signature():
    signature = RequestValidator("").compute_signature("wss://voice.example.com/media", {})
    check = validate_websocket_upgrade("/media", b"", {"x-twilio-signature": signature})
    assert check == SignatureCheck(False, "TWILIO_AUTH_TOKEN is not set")


@override_settings(DEBUG=True)
def test_debug_does_not_disable_checks():
    assert not validate_websocket_upgrade("/twilio/media-stream/", b"", {}).ok
    assert not validate_http_request(form_post("/twilio/voice/", "CallSid=CA1")).ok


# --- Log sanitiser -------------------------------------------------------------------------


def test_sanitize_makes_one_short_printable_line():
    assert sanitize("a\nb\r\n\tc\x00d\x1b[31m") == "a b c d [31m"
    assert sanitize("  lots   of\u2028space  ") == "lots of space"
    assert sanitize("x" * 130) == "x" * 120 + "..."
    assert sanitize("abc", limit=2) == "ab..."
    assert sanitize(None) == ""
    assert sanitize(42) == "42"
