"""``GET /metrics`` for Prometheus, answered only to the allowed networks or the bearer token.

``MEDIASTREAM["METRICS_ALLOWED_NETWORKS"]`` (default: loopback only) lists the
client networks that may scrape; with ``METRICS_BEARER_TOKEN`` set, a request
carrying ``Authorization: Bearer <token>`` may too, from anywhere. The client
address is the peer's, or behind ``TRUSTED_PROXIES`` the first untrusted hop of
``X-Forwarded-For`` (as for media streams). Anyone else gets an empty 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from ..admission import resolve_client_ip
from ..conf import app_settings
from ..proxies import parse_trusted_proxy
from ..throttled import ThrottledLog
from .exposition import exposition

__all__ = ["metrics_view", "scrape_allowed"]

logger = logging.getLogger(__name__)

_refused = ThrottledLog(logger, "%(count)d more metrics scrapes refused in the last %(seconds).0fs")


@csrf_exempt  # read-only: anything but GET and HEAD is 405, not a CSRF page
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    client = _client_ip(request)
    if not scrape_allowed(client, request.headers.get("Authorization", "")):
        _refused.warning("Refused a metrics scrape from %s: not an allowed network, no valid token", client)
        refused = HttpResponse(status=403, content_type="text/plain")
        refused._has_been_logged = True  # logged above, rate-limited; not once more by django.request
        return refused
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)


def scrape_allowed(client_ip: str, authorization: str) -> bool:
    """Whether a scrape from ``client_ip`` with that ``Authorization`` header is answered."""
    token = app_settings.METRICS_BEARER_TOKEN
    if token and isinstance(token, str):
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    for entry in app_settings.METRICS_ALLOWED_NETWORKS:
        try:
            network = parse_trusted_proxy(entry)
        except ValueError:  # manage.py check names it (mediastream.E040); allowing less is the safe side
            continue
        if network.version == ip.version and ip in network:
            return True
    return False


def _client_ip(request: HttpRequest) -> str:
    meta = request.META
    return resolve_client_ip(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"), app_settings.TRUSTED_PROXIES)
