"""Django's ASGI handler, cheaper on daphne's event loop: a sync view on one thread hop, threads reused.

Under Django's own ASGI handler every sync middleware method (the default
project has seven middlewares, most with a ``process_request`` and a
``process_response``) and then the sync view each run through
``sync_to_async``: a dozen and a half round trips between daphne's event loop
and the request's thread, each a future, an executor hand-off and a wake-up of
the loop that also carries every media stream of the process. And each
request gets a thread of its own, started from the event loop (which waits for
it to run) and joined by another new thread at the end. This handler:

* resolves the path first: a sync view gets the middleware chain loaded in
  sync mode, run as under WSGI in one ``sync_to_async`` call; an async view
  (the health check) or a path that does not resolve keeps Django's async chain;
* runs each request's thread-sensitive work on a thread borrowed from a small
  pool of idle ones (``ThreadSensitiveContext(executor=...)``, asgiref 3.10+),
  one request at a time per thread as under a WSGI server; a thread still busy
  when its request ends (a view that outlived its client) is not reused;
* runs at most ``MEDIASTREAM["MAX_SYNC_VIEWS"]`` sync views (with their
  middleware) at once, the others wait their turn as under a WSGI server with
  that many workers; a view holds its slot until it returns, even when its
  client has left. Every thread running Python competes with the event loop
  for the GIL, and a burst of voice webhooks all running at once starves the
  loop that carries the live calls' audio (``bench/README.md``, "A cap on sync
  views"). The cost is that waiting: webhooks answer later under a burst.

Responses, signals (``request_started``/``request_finished`` on the request's
thread, which closes its database connection), exceptions and middleware are
Django's own.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.urls import Resolver404, get_resolver, get_urlconf

__all__ = ["OneHopASGIHandler", "get_asgi_application"]

#: Idle request threads kept for the next requests (more run at once when needed).
IDLE_THREADS = 32
_EXECUTOR_CONTEXTS = "executor" in inspect.signature(ThreadSensitiveContext).parameters


class _RequestThread(ThreadPoolExecutor):
    """One worker thread; counts the calls it has not finished."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="django-request")
        self.unfinished = 0
        self.submitted = 0  # calls ever handed to this thread (each one a hop from the event loop)
        self._count = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._count:
            self.unfinished += 1
            self.submitted += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        with self._count:
            self.unfinished -= 1


class _RequestThreads:
    """Idle request threads, last used first (touched from the event loop only)."""

    def __init__(self, idle: int = IDLE_THREADS) -> None:
        self._idle: list[_RequestThread] = []
        self._max_idle = idle

    def acquire(self) -> _RequestThread:
        return self._idle.pop() if self._idle else _RequestThread()

    def release(self, thread: _RequestThread) -> None:
        if thread.unfinished == 0 and len(self._idle) < self._max_idle:
            self._idle.append(thread)
        else:
            thread.shutdown(wait=False)  # its thread ends once its last call returns


class OneHopASGIHandler(ASGIHandler):
    """:class:`~django.core.handlers.asgi.ASGIHandler` that runs a sync view's request on one thread hop.

    The sync chain is a second set of the project's middleware instances,
    loaded as for WSGI (a middleware's ``__init__`` runs once per chain).
    """

    def __init__(self) -> None:
        super().__init__()  # the async chain, for async views
        self.sync_handler = BaseHandler()
        self.sync_handler.load_middleware(is_async=False)
        self._sync_get_response = sync_to_async(self.sync_handler.get_response, thread_sensitive=True)
        self._threads = _RequestThreads()
        self._slots: tuple[tuple[asyncio.AbstractEventLoop, int], asyncio.Semaphore] | None = None

    async def __call__(self, scope, receive, send):
        if not _EXECUTOR_CONTEXTS or scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # a thread per request (or Django's ValueError)
        thread = self._threads.acquire()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            self._threads.release(thread)

    async def get_response_async(self, request):
        if _view_is_async(request):
            return await super().get_response_async(request)
        slots = self._sync_slots()
        if slots is None:
            return await self._sync_get_response(request)
        await slots.acquire()
        # The slot is the view's until it returns: a client that leaves cancels this
        # request, not the view running in its thread.
        view = asyncio.ensure_future(self._sync_get_response(request))

        def view_returned(done: asyncio.Future) -> None:
            slots.release()
            if not done.cancelled():
                done.exception()  # retrieved: the request that awaited it may have gone

        view.add_done_callback(view_returned)
        return await asyncio.shield(view)

    def _sync_slots(self) -> asyncio.Semaphore | None:
        """The cap on sync views running at once, for the running loop (None: no cap)."""
        from .conf import app_settings

        limit = app_settings.MAX_SYNC_VIEWS
        if limit is None:
            return None
        key = (asyncio.get_running_loop(), limit)
        if self._slots is None or self._slots[0] != key:  # a semaphore belongs to one loop
            self._slots = (key, asyncio.Semaphore(limit))
        return self._slots[1]


def _view_is_async(request) -> bool:
    try:
        match = get_resolver(get_urlconf()).resolve(request.path_info)
    except Resolver404:
        return True  # Django's own 404 path, as before
    except Exception:
        return True  # a broken URLconf or converter: Django's async chain turns it into its 500 response
    return iscoroutinefunction(match.func)


def get_asgi_application() -> OneHopASGIHandler:
    """``django.core.asgi.get_asgi_application`` with :class:`OneHopASGIHandler`."""
    import django

    django.setup(set_prefix=False)
    return OneHopASGIHandler()
