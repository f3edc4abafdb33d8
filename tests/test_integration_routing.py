"""A WebSocket on a path no route serves gets a clean 403 and one rate-limited log line, never a 500.

Channels' URLRouter alone raises ValueError("No route found for path ...") for
any unknown path, which daphne logs as a traceback and answers with a 500:
anyone could fill the log without a signature. In process through the ASGI
application, and against a real daphne.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from mediastream.asgi_inspect import routes_media_stream
from mediastream.refusals import RefusalLog
from mediastream.routing import websocket_router, websocket_urlpatterns

from .streams import hang_up, open_call

# Imported before any test: loading it sets Django up again, which replaces the root log handlers.
from settings.asgi import application  # noqa: E402


async def _handshake(application, path: str) -> tuple[bool, int | None]:
    comm = WebsocketCommunicator(application, path)
    comm.scope["client"] = ["198.51.100.9", 40000]
    connected, code = await comm.connect(timeout=3)
    await comm.wait(timeout=3)
    return connected, code


@pytest.mark.asyncio
async def test_unrouted_path_is_refused_before_accept_in_process(caplog, monkeypatch):
    monkeypatch.setattr("mediastream.routing.refusals", RefusalLog(interval=60, burst=1))
    caplog.set_level(logging.WARNING)
    results = [await _handshake(application, f"/not/a/route/{n}") for n in range(5)]
    assert [connected for connected, _code in results] == [False] * 5  # closed before accept: daphne answers 403
    lines = [r.getMessage() for r in caplog.records if "no route serves that path" in r.getMessage()]
    assert lines == ["Refused a WebSocket for /not/a/route/0 from 198.51.100.9: no route serves that path"]


@pytest.mark.asyncio
async def test_a_bare_urlrouter_raises_for_the_same_path():
    """What the catch-all is for: the router a project would otherwise serve crashes on the path."""
    with pytest.raises(ValueError, match="No route found"):
        await _handshake(URLRouter(websocket_urlpatterns), "/not/a/route/")


def test_the_router_keeps_extra_routes_before_the_refusal():
    extra = websocket_urlpatterns[0].__class__  # a URLPattern, like the project's own routes
    router = websocket_router([*websocket_urlpatterns])
    assert isinstance(router.routes[-1], extra) and router.routes[-1].name == "unrouted"
    assert routes_media_stream(router, "/twilio/media-stream/") is True
    assert routes_media_stream(router, "/twilio/media-stream") is True
    assert routes_media_stream(router, "/elsewhere/") is False


def _raw_upgrade(port: int, path: str) -> bytes:
    import socket

    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request.encode())
        return conn.recv(200)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_daphne_answers_403_for_an_unrouted_path_and_still_serves_streams(daphne):
    async with daphne.astart(name="unrouted") as live:
        answers = [await asyncio.to_thread(_raw_upgrade, live.port, f"/wp-admin/{n}?x=1") for n in range(3)]
        _call, stream = await open_call(live)  # the media stream route still works beside the refusal
        row = await hang_up(stream)
    assert all(answer.startswith(b"HTTP/1.1 403") for answer in answers), answers
    log = live.log.read_text(errors="replace")
    assert "no route serves that path" in log
    assert "Traceback" not in log and "No route found" not in log
    assert row.stopped_at is not None


def test_the_ready_application_without_settings_says_which_variable_to_set():
    import os
    import subprocess
    import sys

    from .live import ROOT

    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", "import mediastream.asgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ImproperlyConfigured: mediastream.asgi serves your project: set DJANGO_SETTINGS_MODULE" in result.stderr
    assert "DJANGO_SETTINGS_MODULE=mysite.settings daphne mediastream.asgi:application" in result.stderr
