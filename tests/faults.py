"""Real faults for tests: a Redis server of the test's own that it kills and restarts.

Never the shared Redis: the test starts ``redis-server`` on a free port, with
nothing kept on disk, so a restart comes back empty as a crashed Redis would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from collections.abc import Iterator

from .live import free_port

__all__ = ["PrivateRedis", "private_redis"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers():
                return
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: connections drop, nothing is saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


# --- a database outage ---------------------------------------------------------------


class BlockedDatabase:
    """The test's own PostgreSQL database, refusing every connection while blocked.

    ``ALTER DATABASE ... ALLOW_CONNECTIONS false`` and ``pg_terminate_backend`` of
    its sessions, from a connection to the ``postgres`` database; the sessions
    of the shared server's other databases are never touched. Only a test
    database (its name starts with ``test``) can be blocked. ``spare`` backend
    pids survive the block (the test process's own main-thread connection, so
    pytest-django can flush the database afterwards).
    """

    def __init__(self, name: str, admin_dsn: str, spare: tuple[int, ...] = ()) -> None:
        if not name.startswith("test"):
            raise ValueError(f"refusing to block {name!r}: only a test database may be blocked")
        self.name = name
        self.admin_dsn = admin_dsn
        self.spare = spare
        self.blocked = False

    def _execute(self, sql: str, params: list | None = None) -> list:
        import psycopg
        from psycopg import sql as pgsql

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            cursor = conn.execute(pgsql.SQL(sql).format(db=pgsql.Identifier(self.name)), params)
            return cursor.fetchall() if cursor.description else []

    def block(self) -> int:
        """Refuse new connections and end the open ones; returns how many sessions were ended."""
        self._execute("ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        self.blocked = True
        return self.terminate()

    def terminate(self) -> int:
        rows = self._execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
            [self.name, list(self.spare)],
        )
        return sum(1 for (ended,) in rows if ended)

    def allow(self) -> None:
        self._execute("ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        self.blocked = False
        _fresh_pool()


def _fresh_pool() -> None:
    """This process's connection pool held sessions the block ended: the next connection comes from a new one.

    (mediastream's own probe does the same in a server; a test process without
    streams of its own has no probe, and the pool's reconnection backs off.)
    """
    from django.db import connection

    pools = getattr(connection, "_connection_pools", None)
    stale = pools.pop(connection.alias, None) if pools else None
    if stale is not None:
        stale.close(timeout=0)


def _admin_dsn(database: dict) -> str:
    parts = {
        "host": database.get("HOST") or "127.0.0.1",
        "port": database.get("PORT") or 5432,
        "user": database.get("USER") or "postgres",
        "password": database.get("PASSWORD") or "",
        "dbname": "postgres",
    }
    return " ".join(f"{key}={value}" for key, value in parts.items() if value != "")


@contextmanager
def blocked_database(name: str | None = None, *, block: bool = True) -> Iterator[BlockedDatabase]:
    """The test database (Django's ``default``, or ``name``) blocked; connections allowed again at the end.

    With ``block=False`` the test calls ``.block()`` and ``.allow()`` itself;
    either way the database accepts connections again when the block ends.
    """
    from django.conf import settings
    from django.db import connection

    database = settings.DATABASES["default"]
    raw = connection.connection  # this thread's session, if it has one: spared
    spare = (raw.info.backend_pid,) if raw is not None and not raw.closed else ()
    blocked = BlockedDatabase(name or database["NAME"], _admin_dsn(database), spare)
    if block:
        blocked.block()
    try:
        yield blocked
    finally:
        blocked.allow()


__all__ += ["BlockedDatabase", "blocked_database"]
