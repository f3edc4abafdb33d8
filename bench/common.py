"""Shared plumbing for the benchmarks: a throwaway database, a daphne process, /proc readings.

Nothing here imports Django, so the orchestrating processes stay light.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DAPHNE = Path(sys.executable).with_name("daphne")

PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_BASE = os.environ.get("BENCH_PG_URL_BASE", "postgres://postgres@127.0.0.1:5432/")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

#: What the simulated Twilio signs and the server checks (bench/settings.py sets them).
PUBLIC_BASE_URL = "https://voice.example.com"
AUTH_TOKEN = "bench-auth-token-0123456789"

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile() -> None:
    """Hundreds of sockets per process: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_id() -> str:
    return f"{os.getpid()}x{secrets.token_hex(3)}"


# --- PostgreSQL ------------------------------------------------------------------


def create_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_URL_BASE + name


def drop_database(name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # cleanup must not hide the results
        log(f"could not drop database {name}: {exc}")


def base_env(database_url: str, prefix: str, overrides: dict | None = None) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CHANNEL_LAYER_PREFIX": prefix,
        "MEDIASTREAM_OVERRIDES": json.dumps(overrides or {}),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "BENCH_DISPATCH": os.environ.get("BENCH_DISPATCH", ""),
    }


def migrate(database_url: str, prefix: str) -> None:
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=base_env(database_url, prefix),
        check=True,
        timeout=300,
    )


@contextmanager
def bench_database(prefix: str):
    """A fresh, migrated database named after the run; dropped afterwards."""
    name = f"bench_mediastream_{prefix}".lower()
    url = create_database(name)
    try:
        migrate(url, prefix)
        yield url
    finally:
        drop_database(name)


# --- Redis -----------------------------------------------------------------------


def redis_cleanup(prefix: str) -> int:
    """Delete every key of the run's channel-layer prefix; returns how many."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
        return len(keys)
    except Exception as exc:
        log(f"could not clean Redis keys {prefix}*: {exc}")
        return 0


# --- daphne ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"daphne did not listen on {port} within {timeout}s")


def key_json_pairs(items: list[str]) -> dict:
    """``["KEY=JSON", ...]`` from a repeatable command-line option (``--override``, ``--set``) as a dict."""
    pairs = {}
    for item in items:
        key, _, value = item.partition("=")
        pairs[key] = json.loads(value)
    return pairs


def bench_overrides(**extra) -> dict:
    """MEDIASTREAM overrides every bench daphne gets: limits out of the way (bench/settings.py sets the token)."""
    return {
        "MAX_CONNECTIONS": 5000,
        "MAX_PENDING_CONNECTIONS": 5000,
        "MAX_PENDING_CONNECTIONS_PER_IP": 5000,
        "PRE_START_TIMEOUT": 30.0,
        "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.discard.DiscardBackend", "OPTIONS": {}},
        **extra,
    }


class Daphne:
    """The ASGI server in a child process on a free loopback port: ``daphne bench.asgi:application``.

    ``server="uvicorn"`` / ``"uvicorn-uvloop"`` run the same app under uvicorn
    instead (a what-if for comparison; ``uvicorn_bin`` must point at a uvicorn
    that can import the project, e.g. from a side virtualenv).
    """

    def __init__(
        self,
        *,
        database_url: str,
        prefix: str,
        overrides: dict,
        log_path: Path,
        app: str = "bench.asgi:application",
        server: str = "daphne",
        uvicorn_bin: str = "uvicorn",
    ):
        self.port = free_port()
        self.log_path = log_path
        self.server = server
        env = base_env(database_url, prefix, overrides)
        raise_nofile()
        if server == "daphne":
            cmd = [
                str(DAPHNE),
                "-b", "127.0.0.1",
                "-p", str(self.port),
                "--websocket-max-message-size", str(128 * 1024),
                "--websocket-max-frame-size", str(128 * 1024),
                "--application-close-timeout", "10",
                app,
            ]  # fmt: skip
        elif server in ("uvicorn", "uvicorn-uvloop"):
            cmd = [
                uvicorn_bin, app,
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--ws", "websockets-sansio",
                "--ws-max-size", str(128 * 1024),
                "--loop", "uvloop" if server == "uvicorn-uvloop" else "asyncio",
                "--lifespan", "off",
                "--no-access-log",
            ]  # fmt: skip
        else:
            raise ValueError(f"unknown server {server!r}")
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.proc)
        except Exception:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 10.0) -> dict:
        with urllib.request.urlopen(self.http + path, timeout=timeout) as response:
            return json.loads(response.read())

    def drain(self, timeout: float = 30.0) -> int:
        """Wait until every consumer has finished its teardown; returns how many had not."""
        deadline = time.monotonic() + timeout
        active = -1
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                active = self.get("/bench/stats", timeout=10)["active"]
            except Exception:
                return -1
            if active == 0:
                return 0
            time.sleep(0.1)
        return active

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_counts(self) -> dict:
        text = self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""
        return {
            "warnings": text.count(" WARNING "),
            "errors": text.count(" ERROR ") + text.count("Traceback"),
        }


# --- /proc -----------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of one thread, in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" the fields start at #3 (state): utime is #14, stime #15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait_seconds(pid: int) -> float:
    """Time the process's main thread spent runnable but waiting for a CPU (schedstat)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs, from /proc/stat; diff two readings."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


def machine_steal() -> tuple[int, int]:
    """(steal, total) jiffies over all CPUs: the time the hypervisor gave this VM's CPUs to others; diff two readings."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[7], sum(values[:8])


def fault_counts(pid: int) -> tuple[int, int]:
    """(minor, major) page faults of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])


def ctx_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of the main thread."""
    vol = invol = 0
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol = int(line.split()[1])
    return vol, invol


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def child_pids(pid: int) -> list[int]:
    """Direct children (e.g. the Piper worker under daphne)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return out


def fmt(value, spec: str = ".1f", none: str = "-") -> str:
    if value is None:
        return none
    return format(value, spec)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([line, sep, *body])
