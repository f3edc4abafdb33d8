"""``bin/run ADDRESS`` serves the demo there, says what it does, and signs for the address it serves.

Run from a copy of the demo (bin/, settings/, examples/, manage.py) whose
``.venv`` is this environment (set up: bin/setup has nothing to install), so
the checkout's own ``.env.local`` and database are never touched. With
neither TWILIO_AUTH_TOKEN nor PUBLIC_BASE_URL set, a ``simulate_call``
without ``--server`` from a second process reaches the server and its
signature is accepted: both read the derived URL from ``.env.local``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .live import ROOT, free_port

pytestmark = pytest.mark.packaging

DEMO = ("bin", "settings", "examples", "manage.py", "pyproject.toml", "requirements")


def demo_copy(tmp: Path) -> Path:
    """The demo in ``tmp/demo`` with a ``.venv`` that is this one (and counts as set up)."""
    demo = tmp / "demo"
    demo.mkdir()
    for name in DEMO:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, demo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, demo / name)
    venv = demo / ".venv"
    real = Path(sys.prefix)
    (venv / "bin").mkdir(parents=True)
    shutil.copy(real / "pyvenv.cfg", venv / "pyvenv.cfg")
    os.symlink(real / "lib", venv / "lib")
    os.symlink(sys.executable, venv / "bin" / "python")
    stamp = venv / ".installed-speech,demo"
    stamp.touch()
    later = time.time() + 60
    os.utime(stamp, (later, later))  # newer than the copied pyproject.toml: nothing to install
    return demo


def test_bin_run_serves_the_given_address_and_signs_for_it(tmp_path):
    demo = demo_copy(tmp_path)
    port = free_port()
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL", "DATABASE_URL", "REDIS_URL",
                       "ALLOWED_HOSTS", "ADDR", "PYTHONPATH"}
    }
    env["PYTHONPATH"] = str(demo)  # its settings/ and examples/, not the checkout's
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(["bin/run", f"127.0.0.1:{port}"], cwd=demo, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Quit the server with" not in log.read_text(errors="replace"):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        local = dict(line.split("=", 1) for line in (demo / ".env.local").read_text().splitlines() if "=" in line)
        assert local["PUBLIC_BASE_URL"] == f"http://127.0.0.1:{port}"
        assert local["TWILIO_AUTH_TOKEN"].startswith("local-")
        # runserver prints its banner before daphne listens: wait for the port (bounded).
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/nope/")
                break
            except httpx.ConnectError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
        assert response.status_code == 404
        call = subprocess.run(
            [sys.executable, "manage.py", "simulate_call", "--say", "Hello.", "--listen", "1",
             "--out", str(tmp_path / "agent.wav")],
            cwd=demo, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    output = log.read_text(errors="replace")
    assert call.returncode == 0, call.stdout + call.stderr
    assert "stream closed (1000)" in call.stdout
    assert "bin/run: applying database migrations" in output and f"Serving on http://127.0.0.1:{port}" in output
    # One handler: Django's own console handler is off, so its lines are not printed twice.
    assert output.count("Not Found: /nope/") == 1, output


def test_bin_run_refuses_an_address_it_cannot_serve(tmp_path):
    demo = demo_copy(tmp_path)
    result = subprocess.run(["bin/run", "localhost:http"], cwd=demo, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "give PORT, HOST:PORT or [IPv6]:PORT" in result.stderr
