"""Twilio request signatures, checked against the configured public URL.

Twilio signs the exact URL it requested. Rebuilding that URL from ``Host`` or
``X-Forwarded-*`` headers would let the caller pick the URL its signature is
checked against, and breaks behind TLS-terminating proxies, so every URL here
is built from the ``TWILIO_PUBLIC_BASE_URL`` setting plus the path received.

The HMAC itself is twilio-python's :class:`~twilio.request_validator.RequestValidator`;
this module only chooses the URL candidates and says why a check failed, and
names what the HMAC covers (:func:`signed_material`), so replay protection can
treat every request that validates under one signature as one request.
Only ``VOICECALL["VALIDATE_SIGNATURES"]`` turns the checks off; ``DEBUG`` never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from django.http import HttpRequest, QueryDict
from django.utils.encoding import escape_uri_path
from twilio.request_validator import RequestValidator

from .conf import voicecall_settings
from .logsafe import sanitize

__all__ = [
    "SIGNATURE_HEADER",
    "SignatureCheck",
    "public_url_for",
    "public_websocket_url_for",
    "request_public_url",
    "signed_material",
    "validate_http_request",
    "validate_websocket_upgrade",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
_WS_SIGNATURE_HEADER = SIGNATURE_HEADER.lower()
_WS_SCHEMES = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of a signature check; ``reason`` is safe to log (no secrets, no query values)."""

    ok: bool
    reason: str


# --- Public URLs ---------------------------------------------------------------


def _public_base() -> tuple[str, str, str]:
    """``(scheme, netloc, path prefix)`` of TWILIO_PUBLIC_BASE_URL, without credentials."""
    parts = urlsplit(str(voicecall_settings.TWILIO_PUBLIC_BASE_URL).strip())
    netloc = parts.netloc.rpartition("@")[2]  # Twilio drops userinfo before signing
    return parts.scheme.lower(), netloc, parts.path.rstrip("/")


def _prefixed(prefix: str, path: str) -> str:
    """``path`` under TWILIO_PUBLIC_BASE_URL's own path, unless it already starts with it."""
    if not path.startswith("/"):
        path = "/" + path
    if prefix and path != prefix and not path.startswith(prefix + "/"):
        path = prefix + path
    return path


def public_url_for(path: str, query: str = "") -> str:
    """The public URL Twilio uses for ``path`` (and the raw ``query``, if any)."""
    scheme, netloc, prefix = _public_base()
    url = f"{scheme}://{netloc}{_prefixed(prefix, path)}"
    return f"{url}?{query}" if query else url


def public_websocket_url_for(path: str) -> str:
    """The ``wss://`` (or ``ws://`` for an http base) URL of ``path``, without a query."""
    scheme, netloc, prefix = _public_base()
    path = path.split("?", 1)[0]
    return f"{_WS_SCHEMES.get(scheme, scheme)}://{netloc}{_prefixed(prefix, path)}"


def request_public_url(request: HttpRequest) -> str:
    """The URL Twilio signed for ``request``: public origin + the path and query received."""
    return public_url_for(escape_uri_path(request.path), request.META.get("QUERY_STRING", ""))


# --- What a signature covers ------------------------------------------------------


def _signed_params(url: str, params: Any) -> Any:
    """The params the validator hashes: none for a JSON body whose hash is in the URL."""
    if isinstance(params, str):
        return {} if "bodySHA256" in QueryDict(urlsplit(url).query) else {"": params}
    return params or {}


def signed_material(url: str, params: Mapping[str, Any] | str | None) -> str:
    """The exact string Twilio's HMAC covers for ``url`` and ``params``.

    As ``RequestValidator.compute_signature`` builds it: the URL, then for each
    distinct param name in sorted order, name + value for each of its distinct
    values in sorted order. So ``a=bc`` and ``ab=c``, or ``x=1&x=1`` and ``x=1``,
    share one material and one signature. A JSON body is covered through the
    ``bodySHA256`` in the URL (a raw body without one is covered whole).
    """
    params = _signed_params(url, params)
    getlist = getattr(params, "getlist", None)
    parts = [url]
    for name in sorted(set(params)):
        values = getlist(name) if getlist is not None else [params[name]]
        parts.extend(name + value for value in sorted(set(values)))
    return "".join(parts)


# --- Checks ----------------------------------------------------------------------


def _configured_validator() -> RequestValidator | SignatureCheck:
    """A validator for the auth token, or the check result when no validation can happen."""
    if not voicecall_settings.VALIDATE_SIGNATURES:
        return SignatureCheck(True, "signature validation disabled")
    token = voicecall_settings.TWILIO_AUTH_TOKEN
    if not token:
        return SignatureCheck(False, "TWILIO_AUTH_TOKEN is not set")
    return RequestValidator(str(token))


def _describe(url: str) -> str:
    """``url`` for a log line: query values replaced by "...", control characters removed."""
    parts = urlsplit(url)
    if parts.query:
        keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True)]
        url = urlunsplit(parts._replace(query="&".join(f"{key}=..." for key in keys)))
    return sanitize(url, limit=160)


def _matches(
    validator: RequestValidator, candidates: Iterable[tuple[str, Any]], signature: str
) -> bool:
    """True if ``signature`` is valid for any ``(url, params)`` candidate."""
    for url, params in candidates:
        try:
            if validator.validate(url, params, signature):
                return True
        except (TypeError, ValueError):  # malformed input never validates
            continue
    return False


def validate_http_request(request: HttpRequest) -> SignatureCheck:
    """Check ``X-Twilio-Signature`` on a webhook (form POST, or a JSON body with ``bodySHA256``)."""
    validator = _configured_validator()
    if isinstance(validator, SignatureCheck):
        return validator
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature:
        return SignatureCheck(False, f"missing {SIGNATURE_HEADER} header")
    url = request_public_url(request)
    params: Any = request.POST
    if "bodySHA256" in QueryDict(urlsplit(url).query):
        # Twilio signs the URL only and puts the body's hash in it.
        params = request.body.decode("utf-8", errors="replace")
    if _matches(validator, [(url, params)], signature):
        return SignatureCheck(True, "valid signature")
    return SignatureCheck(False, f"invalid signature for {_describe(url)}")


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive header lookup (ASGI lowercases names, but need not)."""
    for key, value in headers.items():
        key_text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if key_text.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return ""


def _port_variants(url: str) -> list[str]:
    """``url`` as given plus the same URL with the default port made explicit or removed."""
    parts: SplitResult = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return [url]
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    variants = [url]
    if default is not None and port in (None, default):
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return list(dict.fromkeys(variants))


def _slash_variants(url: str) -> list[str]:
    """``url`` and the same URL with its trailing slash added or removed."""
    if url.endswith("/"):
        stripped = url.rstrip("/")
        return [url, stripped] if stripped.count("/") > 2 else [url]
    return [url, url + "/"]


def validate_websocket_upgrade(
    path: str, query_string: bytes, headers: Mapping[str, str]
) -> SignatureCheck:
    """Check ``x-twilio-signature`` on a Media Streams WebSocket upgrade.

    Twilio signs the ``wss://`` URL from the TwiML with the query-string pairs
    (normally none) as params. Accepted variants: with and without a trailing
    slash, with and without the default port, and the query either as params
    or left in the URL.
    """
    validator = _configured_validator()
    if isinstance(validator, SignatureCheck):
        return validator
    signature = _header(headers, _WS_SIGNATURE_HEADER)
    if not signature:
        return SignatureCheck(False, f"missing {_WS_SIGNATURE_HEADER} header")
    raw_query = (
        query_string.decode("latin-1") if isinstance(query_string, bytes) else str(query_string or "")
    )
    query_params = QueryDict(raw_query)
    base = public_websocket_url_for(path)
    candidates: list[tuple[str, Any]] = []
    for slashed in _slash_variants(base):
        for url in _port_variants(slashed):
            candidates.append((url, query_params))
            if raw_query:
                candidates.append((f"{url}?{raw_query}", {}))
    if _matches(validator, candidates, signature):
        return SignatureCheck(True, "valid signature")
    shown = f"{base}?{raw_query}" if raw_query else base
    return SignatureCheck(
        False, f"invalid signature for {_describe(shown)} ({len(candidates)} URL variants tried)"
    )
