"""A real ``manage.py speech_pool`` process for tests: started on a socket, ready when it says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["SpeechPoolProcess", "running_pool"]


class SpeechPoolProcess:
    def __init__(self, socket_path: str | os.PathLike, *args: str) -> None:
        self.socket_path = str(socket_path)
        self.args = args
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 180.0) -> SpeechPoolProcess:
        """Start the pool and wait for its "ready" line (it listens only once the models are loaded)."""
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "speech_pool", "--socket", self.socket_path, *self.args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        ready = threading.Event()
        threading.Thread(target=self._read_output, args=(self.process.stdout, ready), daemon=True).start()
        if ready.wait(timeout) and self.process.poll() is None:
            return self
        self.kill()
        raise RuntimeError(f"speech pool not ready within {timeout}s: {''.join(self.output)[-2000:]}")

    def _read_output(self, stdout, ready: threading.Event) -> None:
        for line in stdout:
            self.output.append(line)
            if line.startswith("Speech pool ready"):
                ready.set()
        ready.set()  # exited: start() sees the exit

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        """SIGTERM and wait (the pool closes its workers and removes its socket)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL: the socket file stays behind, as after a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def text(self) -> str:
        """What the pool printed so far."""
        return "".join(self.output)


def running_pool(tmp_path_factory, *args: str):
    """A pool started on a socket of its own for a fixture's scope (``yield from`` it), stopped after."""
    pool = SpeechPoolProcess(tmp_path_factory.mktemp("pool") / "speech.sock", *args).start()
    yield pool
    pool.stop()
