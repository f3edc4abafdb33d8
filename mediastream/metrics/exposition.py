"""The text a scrape returns: this process's metrics, or with ``PROMETHEUS_MULTIPROC_DIR`` the host's.

In multiprocess mode (several daphne processes on a host sharing one
directory) every process writes its values to files named by its PID, and a
scrape of any process sums them. A process that exits cleanly drops its live
gauges' files (:func:`forget_this_process`, at exit); one that was killed is
found at the next scrape (its PID is gone) and dropped the same way. Counters
of exited processes stay in the sums, as Prometheus expects of a counter.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import re

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["exposition", "multiprocess_dir", "forget_dead_processes", "forget_this_process", "install"]

logger = logging.getLogger(__name__)

_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None (one process, the default registry)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> tuple[bytes, str]:
    """The body and content type of a scrape."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    forget_dead_processes(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def forget_dead_processes(path: str) -> list[int]:
    """Drop the live gauges of processes of this host that are gone (killed, so no exit hook ran)."""
    gone = []
    for name in os.listdir(path):
        match = _LIVE_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid not in gone and not _alive(pid):
            mark_process_dead(pid, path)
            gone.append(pid)
    if gone:
        logger.info("Metrics: dropped the live gauges of exited processes %s", ", ".join(map(str, gone)))
    return gone


def forget_this_process() -> None:
    path = multiprocess_dir()
    if path is not None and glob.glob(os.path.join(path, f"gauge_live*_{os.getpid()}.db")):
        mark_process_dead(os.getpid(), path)


def install() -> None:
    """In multiprocess mode, drop this process's live gauges when it exits."""
    if multiprocess_dir() is not None:
        atexit.register(forget_this_process)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
