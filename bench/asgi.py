"""ASGI entry point for benchmarks: ``daphne bench.asgi:application``.

Like ``settings.asgi`` (Django for HTTP, the media stream route for
WebSockets) but the route serves :class:`bench.consumer.BenchConsumer`, and
a few loopback-only HTTP endpoints expose the bench figures:

* ``GET /bench/stats``  - lag and handler-time percentiles since the last reset,
  plus how many consumers are streaming;
* ``GET /bench/reset``  - start a new measurement window;
* ``GET /bench/profile/start`` and ``GET /bench/profile/stop?out=PATH`` -
  cProfile of the event-loop thread (the thread these handlers run in) between
  the two calls, written to ``PATH`` as pstats data;
* ``GET /bench/gc-types`` - the objects the garbage collector walks, by type (and how many are frozen).

Like ``mediastream.asgi`` it loads what streams use and starts the
once-per-process work (reap, warm-up) when daphne serves (``BENCH_PREPARE=0``:
at the first call) and freezes the objects of start-up out of the garbage
collector's passes (``BENCH_GC_FREEZE=0``: not); ``BENCH_HIREDIS=0``
parses Redis replies as without the ``hiredis`` package.

``BENCH_CONSUMER=plain`` serves ``MediaStreamConsumer`` itself instead, for
benches whose figures come from the client (``bench/ramp.py``): no per-frame
recording in the server, so its CPU is the production consumer's; the stats
then hold the event-loop probe only.

Never deploy this module: the endpoints have no authentication.
"""

import json
import os
import re
from urllib.parse import parse_qs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

if os.environ.get("BENCH_HIREDIS") == "0":  # what-if: redis-py's own reply parser, as without hiredis installed
    import sys

    sys.modules["hiredis"] = None  # an import of it now raises ImportError

from mediastream.http import get_asgi_application  # as mediastream.asgi serves Django

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import re_path

from mediastream import daphne_frames
from voicecall.conf import voicecall_settings

from .consumer import PROBE, RECORDER, BenchConsumer, MediaStreamConsumer, server_snapshot

if os.environ.get("BENCH_DISPATCH") == "pump":  # what-if experiment, see bench/dispatch.py
    from .dispatch import install

    install()

if os.environ.get("BENCH_SWITCH_INTERVAL"):  # what-if: how long a thread holds the GIL before the loop may take it
    import sys

    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

if os.environ.get("BENCH_DB_THREADS"):  # what-if: threads for the streams' database work
    from mediastream.dbgate import database

    database._threads = int(os.environ["BENCH_DB_THREADS"])

# The frame fast path, as mediastream.asgi installs it (its other daphne fixes, the drain at
# shutdown among them, are left out: the benches stop daphne with SIGTERM and do not wait).
daphne_frames.install()

_profiler = None


def _bench_command(path: str, query: dict) -> tuple[int, dict]:
    global _profiler
    if path == "/bench/stats":
        return 200, {"pid": os.getpid(), **RECORDER.summary("objects" in query), **PROBE.summary(), **server_snapshot()}
    if path == "/bench/reset":
        PROBE.ensure_started()
        RECORDER.reset()
        PROBE.reset()
        return 200, {"pid": os.getpid(), "reset": True, **server_snapshot()}
    if path == "/bench/profile/start":
        import cProfile

        _profiler = cProfile.Profile()
        _profiler.enable()
        return 200, {"profiling": True}
    if path == "/bench/profile/stop":
        if _profiler is None:
            return 409, {"error": "not profiling"}
        _profiler.disable()
        out = (query.get("out") or [""])[0]
        if out:
            _profiler.dump_stats(out)
        _profiler = None
        return 200, {"profiling": False, "out": out}
    if path == "/bench/gc-types":  # what the collector walks: tracked objects by type, most first
        import collections
        import gc

        counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        return 200, {"tracked": sum(counts.values()), "frozen": gc.get_freeze_count(), "top": counts.most_common(40)}
    return 404, {"error": "unknown bench endpoint"}


async def http_app(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith("/bench/"):
        status, data = _bench_command(scope["path"], parse_qs(scope.get("query_string", b"").decode()))
        body = json.dumps(data).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await django_asgi_app(scope, receive, send)


_path = re.escape(voicecall_settings.STREAM_PATH.strip("/"))
_consumer = MediaStreamConsumer if os.environ.get("BENCH_CONSUMER") == "plain" else BenchConsumer

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": URLRouter([re_path(rf"^{_path}/?$", _consumer.as_asgi())]),
    }
)
if os.environ.get("BENCH_PREPARE", "1") != "0":  # as mediastream.asgi does; BENCH_PREPARE=0: at the first call instead
    from mediastream import startup

    startup.prepare()
    startup.start_when_serving()

if os.environ.get("BENCH_GC_THRESHOLD"):  # what-if: gc.set_threshold(...), e.g. "10000,10,10"
    import gc

    gc.set_threshold(*(int(v) for v in os.environ["BENCH_GC_THRESHOLD"].split(",")))

if os.environ.get("BENCH_GC_FREEZE", "1") != "0":  # as mediastream.asgi does; BENCH_GC_FREEZE=0: the what-if without
    from mediastream.collector import freeze_startup_objects

    freeze_startup_objects()
