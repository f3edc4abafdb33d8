"""The speech pool server: Whisper and Piper loaded once per host, serving every daphne process.

Transcriptions run on the Whisper engine's executor (``stt_workers`` threads,
one CTranslate2 thread each: CTranslate2 releases the GIL, so they use as many
cores); syntheses go to the least busy of ``tts_workers`` Piper worker
processes. Each request runs as a task of its own, so one call's long reply
never holds up another's; a cancel frame cancels the task (a queued
transcription never starts; Piper stops at the next sentence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections import Counter
from pathlib import Path
from typing import Any

from . import protocol as p

__all__ = ["SpeechPool"]

logger = logging.getLogger(__name__)


class SpeechPool:
    """Serves ``stt`` (a local WhisperBackend) and ``tts`` (PiperBackends, one worker each) on ``path``."""

    def __init__(self, path: str, *, stt: Any | None, tts: list[Any]) -> None:
        self.path = path
        self.stt = stt
        self.tts = tts
        self._tts_busy = [0] * len(tts)
        self.counts: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self.hello: dict[str, Any] = {}

    async def start(self) -> None:
        """Load the models, then listen (a hello therefore means ready)."""
        sample_rate = None
        if self.stt is not None:
            await self.stt.load()
        for backend in self.tts:
            worker = await backend._running_worker()
            sample_rate = worker.sample_rate
        self.hello = {
            "pid": os.getpid(),
            "stt": None if self.stt is None else {"model": self.stt.key.model or self.stt.key.model_path,
                                                   "workers": self.stt.key.max_concurrent},
            "tts": None if not self.tts else {"sample_rate": sample_rate, "workers": len(self.tts),
                                               "voice": self.tts[0].voice_model.name},
        }  # fmt: skip
        _remove_stale_socket(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=p.MAX_PAYLOAD)
        os.chmod(self.path, 0o660)
        logger.info("Speech pool listening on %s: %s", self.path, self.hello)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for backend in self.tts:
            await backend.aclose()
        if server is not None:  # only the socket this pool bound (not one it refused to take over)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "pid": os.getpid(), "connections": len(self._connections),
                "tts_busy": list(self._tts_busy)}  # fmt: skip

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        self.counts["connections_opened"] += 1
        requests: dict[int, asyncio.Task] = {}
        try:
            writer.write(p.pack_json(p.HELLO, 0, self.hello))
            while True:
                frame = await p.read_frame(reader)
                if frame.kind == p.CANCEL:
                    running = requests.get(frame.request_id)
                    if running is not None and not running.done():
                        self.counts["cancelled"] += 1
                        running.cancel()
                elif frame.kind == p.STATS:
                    writer.write(p.pack_json(p.STATS, frame.request_id, self.stats()))
                elif frame.kind in (p.TRANSCRIBE, p.SYNTHESIZE):
                    handler = self._transcribe if frame.kind == p.TRANSCRIBE else self._synthesize
                    request = asyncio.create_task(handler(frame, writer))
                    requests[frame.request_id] = request
                    request.add_done_callback(lambda _t, rid=frame.request_id: requests.pop(rid, None))
                else:
                    raise ValueError(f"unknown frame kind {frame.kind!r}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except ValueError as exc:
            logger.warning("Speech pool: dropping a client that broke the protocol: %s", exc)
        finally:
            for request in requests.values():
                request.cancel()
            await asyncio.gather(*requests.values(), return_exceptions=True)
            writer.close()
            self._connections.discard(task)

    async def _transcribe(self, frame: p.Frame, writer: asyncio.StreamWriter) -> None:
        self.counts["transcribe"] += 1
        try:
            _body, mulaw = p.split_request(frame.payload)
            if self.stt is None:
                raise RuntimeError("this speech pool serves no transcription (started with --no-stt)")
            text = await self.stt.transcribe(mulaw)
            writer.write(p.pack_json(p.FINAL, frame.request_id, {"text": text}))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counts["errors"] += 1
            logger.exception("Speech pool: a transcription failed")
            writer.write(p.pack_json(p.ERROR, frame.request_id, {"message": f"{type(exc).__name__}: {exc}"[:300]}))

    async def _synthesize(self, frame: p.Frame, writer: asyncio.StreamWriter) -> None:
        self.counts["synthesize"] += 1
        index = None
        try:
            body, _ = p.split_request(frame.payload)
            if not self.tts:
                raise RuntimeError("this speech pool serves no speech synthesis (started with --no-tts)")
            index = min(range(len(self.tts)), key=self._tts_busy.__getitem__)
            self._tts_busy[index] += 1
            text, length_scale = str(body.get("text", "")), body.get("length_scale")
            async with contextlib.aclosing(self.tts[index].synthesize_with(text, length_scale)) as chunks:
                async for chunk in chunks:
                    writer.write(p.pack(p.AUDIO, frame.request_id, chunk.data))
                    await writer.drain()
            writer.write(p.pack(p.END, frame.request_id))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counts["errors"] += 1
            writer.write(p.pack_json(p.ERROR, frame.request_id, {"message": f"{type(exc).__name__}: {exc}"[:300]}))
        finally:
            if index is not None:
                self._tts_busy[index] -= 1


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a pool that died; refuse to start beside a live one."""
    target = Path(path)
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        target.unlink()
        return
    finally:
        probe.close()
    raise RuntimeError(f"another speech pool is already listening on {path}")
