"""A real daphne process serving the project, for end-to-end tests and benchmarks.

Tests get servers from the ``daphne`` fixture (tests/conftest.py), a
:class:`DaphneFactory`; benchmarks call :func:`daphne_server` themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAPHNE = Path(sys.executable).with_name("daphne")

#: MEDIASTREAM["TTS"] for speech out that returns audio at once: a constant PCM
#: level, 40 ms of audio per character and at least 600 ms.
CONSTANT_TTS = {
    "BACKEND": "mediastream.tts.dummy.ConstantBackend",
    "OPTIONS": {"VALUE": 3000, "SAMPLE_RATE": 8000, "MS_PER_CHAR": 40, "MIN_MS": 600},
}


@dataclass
class Live:
    """A running daphne: where to reach it, the Redis layer it listens on, its process and log."""

    port: int
    redis_url: str
    prefix: str
    database_url: str = ""
    log: Path | None = None
    proc: subprocess.Popen | None = None
    name: str = "daphne"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/media-stream/"

    def channel_layers(self) -> dict:
        """CHANNEL_LAYERS for this process to reach the server's calls (use with override_settings)."""
        return {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": self.redis_url, "socket_timeout": None}], "prefix": self.prefix},
            }
        }

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log else ""
        except OSError:
            return ""


def server_database_url() -> str:
    """The URL of pytest-django's test database, for the server process."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(log_path: Path, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait for daphne's "Listening on" log line.

    Not a probe connection: daphne 4.2 keeps a bare TCP connection listed
    without an application for up to a second, and a shutdown in that window
    cancels no application (kill_all_applications raises KeyError).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        if b"Listening on TCP address" in log_path.read_bytes():
            return
        time.sleep(0.02)
    raise TimeoutError(f"daphne did not start listening within {timeout}s")


@contextmanager
def daphne_server(
    *,
    database_url: str,
    redis_url: str,
    prefix: str,
    overrides: dict | None = None,
    settings_module: str = "tests.settings_live",
    max_message_size: int = 128 * 1024,
    log_path: Path | None = None,
    extra_env: dict | None = None,
):
    """Run ``daphne settings.asgi:application`` as production does; yield (port, process)."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "MEDIASTREAM_OVERRIDES": json.dumps(overrides or {}),
        "PYTHONPATH": str(ROOT),
        "DAPHNE_LOG_LEVEL": "INFO",
        **(extra_env or {}),
    }
    if log_path is None:
        log_dir = tempfile.TemporaryDirectory(prefix="daphne-")
        log_path = Path(log_dir.name) / "daphne.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            str(DAPHNE),
            "-b", "127.0.0.1",
            "-p", str(port),
            "--websocket-max-message-size", str(max_message_size),
            "--websocket-max-frame-size", str(max_message_size),
            "--application-close-timeout", "10",
            *os.environ.get("TEST_DAPHNE_ARGS", "").split(),
            "settings.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_listening(log_path, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


#: Every server a :class:`DaphneFactory` started, in order: a failing test's report shows their log tails.
STARTED: list[Live] = []


class DaphneFactory:
    """Starts daphne processes that serve the test database.

    Each server gets MEDIASTREAM overrides of its own, a Redis channel-layer
    prefix no other server shares (so no message crosses between them) and a
    log file under ``log_dir``. ``SHOW_DAPHNE_LOG=1`` prints each log when its
    server stops.
    """

    def __init__(self, *, database_url: str, redis_url: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.log_dir = log_dir
        self._numbers = itertools.count(1)

    @contextmanager
    def start(
        self, overrides: dict | None = None, *, name: str = "daphne", redis_url: str | None = None,
        prefix: str | None = None, env: dict | None = None,
    ) -> Iterator[Live]:
        """Run one server until the block ends; it is listening when the block starts.

        ``redis_url``: a Redis of the test's own (one it restarts), instead of the shared one.
        ``prefix``: the channel-layer prefix of another server, for processes of one deployment.
        ``env``: more of the server's environment (e.g. ``DB_POOL_MAX_SIZE``, read by the settings).
        """
        number = next(self._numbers)
        prefix = prefix or f"mstest{os.getpid()}n{number}"
        log = self.log_dir / f"{number:02d}-{name}.log"
        redis_url = redis_url or self.redis_url
        server = daphne_server(
            database_url=self.database_url, redis_url=redis_url, prefix=prefix, overrides=overrides, log_path=log,
            extra_env=env,
        )
        try:
            with server as (port, proc):
                live = Live(
                    port=port, redis_url=redis_url, prefix=prefix, database_url=self.database_url,
                    log=log, proc=proc, name=name,
                )
                STARTED.append(live)
                yield live
        finally:
            if os.environ.get("SHOW_DAPHNE_LOG") and log.exists():
                print(f"--- {name} log ({log}) ---\n{log.read_text(errors='replace')}")

    @asynccontextmanager
    async def astart(
        self, overrides: dict | None = None, *, name: str = "daphne", redis_url: str | None = None,
        prefix: str | None = None, env: dict | None = None,
    ) -> AsyncIterator[Live]:
        """:meth:`start` for async tests: the server starts and stops in a thread, so the event loop keeps running."""
        server = self.start(overrides, name=name, redis_url=redis_url, prefix=prefix, env=env)
        live = await asyncio.to_thread(server.__enter__)
        try:
            yield live
        finally:
            await asyncio.to_thread(server.__exit__, None, None, None)
