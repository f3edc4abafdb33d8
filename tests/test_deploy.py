"""The deployment guide's files, run as far as one machine allows (docs/deployment.md).

* nginx with the repository's example config (examples/deploy/nginx/mediastream.conf,
  rendered for loopback ports: its listen line and upstream servers, TLS left out)
  in front of two daphne processes of one deployment: a signed call goes through
  it (webhook, WebSocket upgrade, speech back), the caller's address arrives in
  ``X-Forwarded-For`` and is believed because ``TRUSTED_PROXIES`` names nginx,
  an address a client puts in that header itself is not, and the health check
  answers through it.
* The Procfile's web command and the systemd unit's ExecStart, each run as
  written (``$PORT`` / ``%i`` filled in) for one process: it serves a signed call
  and stops cleanly on SIGTERM.

nginx comes from bin/setup-nginx (Debian's nginx-light); without it the proxy
tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from django.test import override_settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mediastream.api import Outcome, aspeak
from mediastream.conf import DEFAULTS
from mediastream.simulator import TwilioCall, TwilioStream, stream_urls
from voicecall.models import MediaStream

from .live import CONSTANT_TTS, DAPHNE, ROOT, Live, free_port, wait_until_listening
from .streams import PUBLIC, auth_token, hang_up, reachable, wait_for

DEPLOY = ROOT / "examples" / "deploy"
NGINX_SITE = DEPLOY / "nginx" / "mediastream.conf"
NGINX = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [pytest.mark.django_db(transaction=True)]
needs_nginx = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK), reason=f"no nginx at {NGINX}: bin/setup-nginx installs Debian's nginx-light"
)


# --- nginx ---------------------------------------------------------------------------


def render_site(text: str, *, listen: int, upstreams: list[int]) -> str:
    """The example site for loopback: its listen port and upstream servers; no TLS, no port-80 redirect."""
    servers = re.findall(r"^    server 127\.0\.0\.1:\d+ [^;]*;$", text, flags=re.M)
    assert len(servers) == len(upstreams), f"the example lists {len(servers)} upstream servers"
    for line, port in zip(servers, upstreams):
        text = text.replace(line, re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", line), 1)
    text, n = re.subn(r"^    listen 443 ssl;$", f"    listen 127.0.0.1:{listen};", text, flags=re.M)
    assert n == 1, "the example's TLS listen line changed"
    text, n = re.subn(r"^    ssl_certificate.*\n", "", text, flags=re.M)
    assert n == 2, "the example's certificate lines changed"
    text, n = re.subn(r"\nserver \{\n    listen 80;.*?\n\}\n", "\n", text, flags=re.S)
    assert n == 1, "the example's port-80 redirect changed"
    return text


class Nginx:
    """nginx in the foreground with a prefix, config and logs of its own under a temporary directory."""

    def __init__(self, site: str, upstreams: list[int]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.port = free_port()
        (self.dir / "site.conf").write_text(render_site(site, listen=self.port, upstreams=upstreams))
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir()
            os.chmod(self.dir / sub, 0o777)  # the workers' user writes there
        d = self.dir
        (d / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n"
            f"  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n"
            f"  scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {(self.dir / 'error.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError("nginx did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is open
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def signed_call_through(base: str, live: Live) -> None:
    """A Twilio call against ``base``: signed webhook, signed upgrade, start, a line spoken back, hang-up."""
    call = TwilioCall(server_url=base, public_url=PUBLIC, auth_token=auth_token())
    instructions = await call.answer()
    connect_url, signed_url = stream_urls(PUBLIC, base, instructions.url)
    stream = TwilioStream(
        connect_url, signed_url=signed_url, auth_token=call.auth_token, call_sid=call.call_sid,
        parameters=instructions.parameters,
    )  # fmt: skip
    await stream.connect()
    await stream.start()
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid).exists(), timeout=10)
    with override_settings(CHANNEL_LAYERS=live.channel_layers()):
        await reachable(call.call_sid, timeout=10)  # the directory entry comes just after the row
        result = await aspeak(call.call_sid, "Through the front door.", wait=True, timeout=20)
    assert result.outcome is Outcome.PLAYED, result
    assert stream.media_frames
    row = await hang_up(stream)
    assert row.close_reason == "socket closed"


async def unsigned_upgrade(url: str, *, source: str, forwarded_for: str | None = None) -> None:
    """A WebSocket upgrade without Twilio's signature from ``source``: refused (403), and logged with the caller's address."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers, local_addr=(source, 0), open_timeout=10):
            pass
    assert refused.value.response.status_code == 403


def logged(lives: list[Live], text: str) -> bool:
    return any(text in live.log.read_text(errors="replace") for live in lives)


@pytest_asyncio.fixture
async def proxied(daphne):
    """Two daphne processes (one layer prefix, TRUSTED_PROXIES naming nginx's 127.0.0.1) behind the example nginx."""
    overrides = {"TTS": CONSTANT_TTS, "TRUSTED_PROXIES": ["127.0.0.1"]}
    if "DRAIN_GRACE_SECONDS" in DEFAULTS:
        overrides["DRAIN_GRACE_SECONDS"] = 60  # a draining process stays up while its call lasts
    async with daphne.astart(overrides, name="proxied-1") as one:
        async with daphne.astart(overrides, name="proxied-2", prefix=one.prefix) as two:
            nginx = Nginx(NGINX_SITE.read_text(), [one.port, two.port])
            await asyncio.to_thread(nginx.start)
            try:
                yield nginx, [one, two]
            finally:
                await asyncio.to_thread(nginx.stop)


@needs_nginx
@pytest.mark.asyncio
async def test_a_signed_call_and_the_callers_address_go_through_the_example_nginx(proxied):
    nginx, lives = proxied
    for _ in lives:  # round-robin: a call on each process
        await signed_call_through(nginx.http, lives[0])

    ws = f"ws://127.0.0.1:{nginx.port}/twilio/media-stream/"
    # nginx appends the caller's address; the app believes it because TRUSTED_PROXIES names nginx.
    await unsigned_upgrade(ws, source="127.0.0.5")
    await wait_for(lambda: logged(lives, "handshake from 127.0.0.5:"))
    # A caller that writes the header itself: nginx appends its real address, which is what counts.
    await unsigned_upgrade(ws, source="127.0.0.6", forwarded_for="203.0.113.9")
    await wait_for(lambda: logged(lives, "handshake from 127.0.0.6:"))
    assert not logged(lives, "from 203.0.113.9")
    # Straight to daphne from an address that is not a trusted proxy: its header is ignored.
    await unsigned_upgrade(lives[0].ws, source="127.0.0.7", forwarded_for="198.51.100.4")
    await wait_for(lambda: logged(lives, "handshake from 127.0.0.7:"))
    assert not logged(lives, "from 198.51.100.4")


@needs_nginx
@pytest.mark.asyncio
async def test_the_health_check_answers_through_the_example_nginx(proxied):
    pytest.importorskip("mediastream.health", reason="the health view (mediastream.health) is not in this tree")
    nginx, lives = proxied
    async with httpx.AsyncClient(base_url=nginx.http, timeout=10) as client:
        for _ in lives:
            answer = await client.get("/healthz")
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("application/json")


@needs_nginx
@pytest.mark.asyncio
async def test_new_calls_go_to_the_other_process_while_one_drains(proxied):
    """SIGTERM: the process refuses new streams (403) while its own call goes on; nginx opens them on the next one."""
    pytest.importorskip("mediastream.draining", reason="draining (mediastream.draining) is not in this tree")
    nginx, (draining, other) = proxied
    held = TwilioCall(server_url=draining.http, public_url=PUBLIC, auth_token=auth_token())
    instructions = await held.answer()
    held_stream = TwilioStream(
        draining.ws, signed_url=instructions.url, auth_token=held.auth_token, call_sid=held.call_sid,
        parameters=instructions.parameters,
    )  # fmt: skip
    await held_stream.connect()
    await held_stream.start()
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=held_stream.stream_sid).exists(), timeout=10)
    draining.proc.send_signal(signal.SIGTERM)
    async with httpx.AsyncClient(base_url=draining.http, timeout=10) as client:
        for _ in range(500):
            if (await client.get("/healthz")).status_code == 503:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the draining process's health check never answered 503")

    for _ in range(3):  # round-robin would give the draining process every other one
        await signed_call_through(nginx.http, other)
    assert draining.proc.poll() is None and not held_stream.closed.is_set()  # its own call goes on
    assert logged([draining], "draining")  # it refused at least one of them, which nginx retried

    row = await hang_up(held_stream)
    assert row.close_reason == "socket closed"
    assert await asyncio.to_thread(draining.proc.wait, 30) == 0


def test_the_example_ports_agree():
    """nginx balances over exactly the daphne instances the systemd target starts."""
    upstream = re.findall(r"^    server 127\.0\.0\.1:(\d+) ", NGINX_SITE.read_text(), flags=re.M)
    target = re.findall(r"daphne@(\d+)\.service", (DEPLOY / "systemd" / "mediastream.target").read_text())
    assert upstream and upstream == target


# --- the process commands ------------------------------------------------------------


def procfile_command(port: int) -> list[str]:
    lines = [line for line in (DEPLOY / "Procfile").read_text().splitlines() if line.startswith("web:")]
    assert len(lines) == 1
    return shlex.split(lines[0].removeprefix("web:").replace("$PORT", str(port)))


def systemd_command(port: int) -> list[str]:
    unit = (DEPLOY / "systemd" / "daphne@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, flags=re.M).group(1)
    return shlex.split(exec_start.replace("%i", str(port)))


@pytest.mark.asyncio
@pytest.mark.parametrize("source", [procfile_command, systemd_command], ids=["Procfile", "systemd"])
async def test_the_example_command_serves_a_call_and_stops_on_sigterm(source, daphne, tmp_path):
    port = free_port()
    argv = source(port)
    assert Path(argv[0]).name == "daphne"
    argv[0] = str(DAPHNE)  # this checkout's virtualenv, where the unit names /srv/voice/venv
    prefix = f"deploycmd{os.getpid()}{port}"
    env = {
        **os.environ, "PORT": str(port), "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings_live", "DATABASE_URL": daphne.database_url,
        "REDIS_URL": daphne.redis_url, "CHANNEL_LAYER_PREFIX": prefix, "DAPHNE_LOG_LEVEL": "INFO",
        "MEDIASTREAM_OVERRIDES": json.dumps({"TTS": CONSTANT_TTS}),
    }  # fmt: skip
    log = tmp_path / "daphne.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_until_listening, log, proc)
        live = Live(port=port, redis_url=daphne.redis_url, prefix=prefix, log=log, proc=proc)
        await signed_call_through(live.http, live)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log.read_text(errors="replace")[-2000:]
