"""The README's integration lines turn a fresh ``django-admin startproject`` into a working voice app.

Builds the wheel from the sources (offline: ``pip wheel --no-build-isolation``),
makes a new project in a temporary folder, appends exactly the lines of the
README's "Add it to a Django project" section (read from README.md, so the two
cannot drift apart), installs the wheel into a folder of its own on
PYTHONPATH (the other packages come from this environment; nothing is
downloaded), migrates, runs ``check --deploy``, serves the project with daphne
as the README says and runs a signed simulated call through it with
``manage.py simulate_call``. The checkout is never on the project's path.

About 30 s; ``-m "not packaging"`` deselects it (``.ci/run`` runs it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .live import ROOT, free_port

pytestmark = pytest.mark.packaging

BIN = Path(sys.executable).parent
AUTH_TOKEN = "fresh-project-token-0123456789"
ACCOUNT_SID = "AC" + "5" * 32
SECTION = "## Add it to a Django project"


def readme_blocks() -> dict[str, str]:
    """The integration section's code blocks that start with a ``# <file>`` line, by file name."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for body in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        first, _, rest = body.partition("\n")
        match = re.fullmatch(r"# (settings\.py|urls\.py)", first.strip())
        if match:
            blocks[match.group(1)] = rest
    return blocks


def test_the_readme_section_comes_first_and_names_every_piece():
    readme = (ROOT / "README.md").read_text()
    assert re.findall(r"^## .*$", readme, flags=re.M)[0] == SECTION
    blocks = readme_blocks()
    assert set(blocks) == {"settings.py", "urls.py"}
    pieces = ('"daphne"', '"channels"', '"voicecall"', '"mediastream"', 'ASGI_APPLICATION = "mediastream.asgi.application"',
              "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_PUBLIC_BASE_URL")
    for piece in pieces:
        assert piece in blocks["settings.py"]
    assert 'path("twilio/", include("voicecall.urls"))' in blocks["urls.py"]


def run(args: list[str], *, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(tmp: Path) -> Path:
    """The wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for package in ("voicecall", "mediastream"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(out), str(source)],
        cwd=tmp, env=dict(os.environ),
    )
    [wheel] = out.glob("django_twilio_mediastream-*.whl")
    return wheel


def wait_for_line(proc: subprocess.Popen, log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} from daphne:\n{log.read_text(errors='replace')[-3000:]}")


def test_a_fresh_startproject_with_the_readme_lines_takes_a_signed_call(tmp_path):
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        cwd=tmp_path, env=dict(os.environ))

    project = tmp_path / "project"
    project.mkdir()
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL", "REDIS_URL"}
    }
    env.update(PYTHONPATH=str(site), TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_ACCOUNT_SID=ACCOUNT_SID)
    run([str(BIN / "django-admin"), "startproject", "mysite", str(project)], cwd=tmp_path, env=env)
    for name, lines in readme_blocks().items():
        with open(project / "mysite" / name, "a") as f:
            f.write("\n" + lines)

    where = run([sys.executable, "-c", "import mediastream, voicecall; print(mediastream.__file__, voicecall.__file__)"],
                cwd=project, env=env).stdout
    assert where.count(str(site)) == 2, where  # the wheel's code, not the checkout's
    run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=project, env=env)
    deploy = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "Traceback" not in deploy.stderr, deploy.stderr
    assert "mediastream.W004" in deploy.stderr  # the in-memory layer, named in deploy mode
    assert "voicecall.W003" not in deploy.stderr  # the README's public URL is https

    port = free_port()
    log = tmp_path / "daphne.log"
    with open(log, "wb") as out:
        daphne = subprocess.Popen(
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "mediastream.asgi:application"],
            cwd=project, env={**env, "DJANGO_SETTINGS_MODULE": "mysite.settings"}, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(daphne, log, "Listening on TCP address")
        call = run(
            [sys.executable, "manage.py", "simulate_call", "--server", f"http://127.0.0.1:{port}",
             "--say", "Hello there.", "--listen", "1", "--out", str(tmp_path / "agent.wav")],
            cwd=project, env=env, timeout=120,
        )
    finally:
        daphne.send_signal(signal.SIGTERM)
        try:
            daphne.wait(15)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait()
    output = call.stdout
    assert re.search(r"stream MZ[0-9a-f]{32} started", output), output
    assert "stream closed (1000)" in output, output
    server_log = log.read_text(errors="replace")
    assert "Traceback" not in server_log, server_log
    assert "The channel layer is in-memory" in server_log  # the zero-config layer says so, once
    with sqlite3.connect(project / "db.sqlite3") as db:
        [(status, account)] = db.execute("SELECT status, account_sid FROM voicecall_call").fetchall()
        [(code, stopped)] = db.execute("SELECT close_code, stopped_at FROM voicecall_mediastream").fetchall()
    assert (status, account, code) == ("completed", ACCOUNT_SID, 1000) and stopped is not None
