"""mediastream.http: Django's ASGI handler with a sync view's request on one thread hop and reused threads.

Driven over ASGI in process (asgiref's ApplicationCommunicator), with views
and a middleware of this module's own: what a project's webhooks and pages
rely on (the middleware runs, the response is Django's, the database
connection goes back at the end of the request) and what the handler is for
(a sync request costs the event loop three hand-offs, not one per middleware
method; an idle thread serves the next request; a thread still running a view
whose client left is not handed to the next one).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from asgiref.testing import ApplicationCommunicator
from django.db import connection
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path
from django.utils.deprecation import MiddlewareMixin

from mediastream.http import OneHopASGIHandler
from settings import MIDDLEWARE as DEMO_MIDDLEWARE  # the demo project's seven sync middlewares

from .support import mediastream_settings

pytestmark = pytest.mark.asyncio

SEEN: dict[str, list] = {}
RELEASE = threading.Event()


class RecordingMiddleware(MiddlewareMixin):
    """Where the middleware ran, and a header on the way out (sync and async capable, as Django's own are)."""

    def process_request(self, request):
        SEEN.setdefault("middleware", []).append(threading.get_ident())

    def process_response(self, request, response):
        response["X-Seen-By"] = "recording-middleware"
        return response


def sync_view(request):
    SEEN.setdefault("sync_view", []).append(threading.get_ident())
    return HttpResponse("sync")


def query_view(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    SEEN.setdefault("query_view", []).append(threading.get_ident())
    return HttpResponse("queried")


def blocking_view(request):
    SEEN.setdefault("blocking_view", []).append(threading.get_ident())
    RELEASE.wait(10)
    return HttpResponse("late")


async def async_view(request):
    SEEN.setdefault("async_view", []).append(threading.get_ident())
    return HttpResponse("async")


urlpatterns = [
    path("sync/", sync_view),
    path("query/", query_view),
    path("block/", blocking_view),
    path("async/", async_view),
]

SETTINGS = override_settings(
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[*DEMO_MIDDLEWARE, f"{__name__}.RecordingMiddleware"],
)


@pytest.fixture
def handler():
    SEEN.clear()
    RELEASE.clear()
    with SETTINGS:
        yield OneHopASGIHandler()
    RELEASE.set()


def scope(url: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": url, "raw_path": url.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip


async def until(condition, failure: str, timeout: float = 5.0) -> None:
    """Wait for ``condition()`` (a view started, a request queued); fail with ``failure`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"{failure} (seen: {SEEN})"
        await asyncio.sleep(0.01)


def waiting(handler) -> bool:
    """A request is queued for a sync-view slot."""
    return bool(handler._slots and handler._slots[1]._waiters)


async def get(handler, url: str) -> tuple[int, dict, bytes]:
    app = ApplicationCommunicator(handler, scope(url))
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(5)
    body = await app.receive_output(5)
    await app.wait(5)
    return start["status"], dict(start["headers"]), body["body"]


async def test_a_sync_view_and_its_middleware_run_on_one_thread_in_three_hand_offs(handler):
    status, headers, body = await get(handler, "/sync/")
    assert (status, body) == (200, b"sync")
    assert headers[b"X-Seen-By"] == b"recording-middleware"
    assert headers[b"X-Frame-Options"] == b"DENY"  # Django's middleware, as configured
    loop_thread = threading.get_ident()
    assert SEEN["middleware"] == SEEN["sync_view"] and SEEN["sync_view"][0] != loop_thread
    (thread,) = handler._threads._idle
    # request_started, the middleware chain with the view, response.close (request_finished):
    # Django's own handler hands each of the seven middlewares' methods over separately.
    assert thread.submitted == 3


async def test_the_next_request_reuses_the_idle_thread_and_the_database_connection_went_back(handler, django_db_blocker):
    with django_db_blocker.unblock():
        for _ in range(3):
            status, _, body = await get(handler, "/query/")
            assert (status, body) == (200, b"queried")
    assert len(set(SEEN["query_view"])) == 1  # one thread served all three, one after the other
    (thread,) = handler._threads._idle
    # request_finished ran on that thread and closed its connection (with a pool: handed back).
    assert thread.submit(lambda: connection.connection is None).result(5)


async def test_an_async_view_keeps_the_async_chain_on_the_event_loop(handler):
    status, headers, body = await get(handler, "/async/")
    assert (status, body) == (200, b"async")
    assert headers[b"X-Seen-By"] == b"recording-middleware"
    assert SEEN["async_view"] == [threading.get_ident()]


async def test_an_unknown_path_is_djangos_404(handler):
    status, _, _ = await get(handler, "/nowhere/")
    assert status == 404


async def test_a_thread_still_running_a_view_whose_client_left_serves_no_other_request(handler):
    app = ApplicationCommunicator(handler, scope("/block/"))
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    await until(lambda: "blocking_view" in SEEN, "the view never started")
    await app.send_input({"type": "http.disconnect"})
    # Django goes on waiting (request_finished queues on the view's busy thread); daphne cancels
    # the application after its close timeout, as here. The view itself goes on in its thread.
    app.future.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app.future
    status, _, body = await get(handler, "/sync/")  # not queued behind the blocked view
    assert (status, body) == (200, b"sync")
    assert SEEN["sync_view"][0] != SEEN["blocking_view"][0]
    RELEASE.set()


async def test_at_most_max_sync_views_sync_views_run_at_once_and_async_views_do_not_wait_for_them(handler):
    # A burst of webhooks all running at once would starve the event loop that carries the calls' audio.
    with mediastream_settings(MAX_SYNC_VIEWS=2):
        apps = [ApplicationCommunicator(handler, scope("/block/")) for _ in range(3)]
        for app in apps:
            await app.send_input({"type": "http.request", "body": b"", "more_body": False})
        await until(lambda: len(SEEN.get("blocking_view", ())) >= 2 and waiting(handler), "two views running, one waiting")
        assert len(SEEN["blocking_view"]) == 2  # the third waits for a slot
        status, _, body = await get(handler, "/async/")  # the health check is not queued behind them
        assert (status, body) == (200, b"async")
        RELEASE.set()
        for app in apps:
            start = await app.receive_output(5)
            assert start["status"] == 200
            assert (await app.receive_output(5))["body"] == b"late"
            await app.wait(5)
        assert len(SEEN["blocking_view"]) == 3


async def test_a_view_whose_client_left_keeps_its_slot_until_it_returns(handler):
    with mediastream_settings(MAX_SYNC_VIEWS=1):
        first = ApplicationCommunicator(handler, scope("/block/"))
        await first.send_input({"type": "http.request", "body": b"", "more_body": False})
        await until(lambda: "blocking_view" in SEEN, "the view never started")
        await first.send_input({"type": "http.disconnect"})  # Twilio gave up on a slow webhook
        first.future.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first.future
        second = ApplicationCommunicator(handler, scope("/sync/"))
        await second.send_input({"type": "http.request", "body": b"", "more_body": False})
        await until(lambda: waiting(handler), "the second request never reached the cap")
        assert "sync_view" not in SEEN  # the first view still runs in its thread: the slot is still its
        RELEASE.set()
        start = await second.receive_output(5)
        assert start["status"] == 200 and (await second.receive_output(5))["body"] == b"sync"
        await second.wait(5)
