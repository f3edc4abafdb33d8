"""The stream processes' side of the speech pool: one connection per event loop and socket.

Requests of every stream share the connection and are routed by id, so they
run concurrently in the pool. A connection that drops (the pool restarted)
fails the requests in flight and is opened again by the next request; a pool
that cannot be reached raises :class:`PoolUnavailable` naming the setting.
Leaving a request early (a barge-in cancels the synthesis, a dropped
speculation cancels the transcription) sends the pool a cancel.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from . import protocol as p

__all__ = ["PoolClient", "PoolUnavailable", "client_for"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
_END = object()


class PoolUnavailable(RuntimeError):
    """The speech pool cannot be reached, or the connection to it was lost."""


class PoolClient:
    """One connection to the pool at ``path``, for the event loop that made it."""

    def __init__(self, path: str, setting: str) -> None:
        self.path = path
        self.setting = setting
        self.hello: dict[str, Any] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Queue] = {}
        self._ids = itertools.count(1)
        #: Connections opened (more than one: the pool restarted, or the connection dropped).
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> dict[str, Any]:
        """Open the connection if it is not open; the pool's hello."""
        if self.connected:
            return self.hello
        async with self._lock:
            if self.connected:
                return self.hello
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_unix_connection(self.path, limit=p.MAX_PAYLOAD)
                    frame = await p.read_frame(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                raise PoolUnavailable(
                    f"No speech pool answers at {self.path!r} ({self.setting}): start it on this host with "
                    f"`manage.py speech_pool`, or remove POOL to load the model in this process "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            if frame.kind != p.HELLO:
                writer.close()
                raise PoolUnavailable(f"The speech pool at {self.path!r} ({self.setting}) did not say hello ({frame.kind!r})")
            self.hello = frame.json()
            self._reader, self._writer = reader, writer
            self.connects += 1
            if self.connects > 1:
                logger.info("Reconnected to the speech pool at %s (pid %s)", self.path, self.hello.get("pid"))
            self._reader_task = asyncio.create_task(self._route(reader), name="speechpool-client")
            return self.hello

    async def _request(self, kind: bytes, body: dict, data: bytes = b"") -> tuple[int, asyncio.Queue]:
        await self.connect()
        request_id = next(self._ids)
        queue: asyncio.Queue = asyncio.Queue()
        self._pending[request_id] = queue
        try:
            self._writer.write(p.pack_request(kind, request_id, body, data))
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            self._pending.pop(request_id, None)
            self._lost(f"writing to it failed: {exc}")
            raise PoolUnavailable(
                f"The speech pool at {self.path!r} ({self.setting}) went away ({exc}); the next request reconnects"
            ) from exc
        return request_id, queue

    def _cancel(self, request_id: int) -> None:
        if self._pending.pop(request_id, None) is not None and self.connected:
            try:
                self._writer.write(p.pack(p.CANCEL, request_id))
            except (OSError, RuntimeError):
                pass  # the reader notices the loss

    async def transcribe(self, mulaw: bytes) -> str:
        """One utterance of 8 kHz mu-law, transcribed by the pool; cancelling this cancels it there."""
        request_id, queue = await self._request(p.TRANSCRIBE, {}, mulaw)
        try:
            frame = await queue.get()
        except BaseException:
            self._cancel(request_id)
            raise
        self._pending.pop(request_id, None)
        if isinstance(frame, Exception):
            raise frame
        if frame.kind == p.ERROR:
            raise RuntimeError(frame.json().get("message", "the speech pool failed"))
        return str(frame.json().get("text", ""))

    async def synthesize(self, text: str, length_scale: float | None) -> AsyncIterator[bytes]:
        """PCM16 chunks (``hello["tts"]["sample_rate"]``); stopping early cancels the synthesis in the pool."""
        request_id, queue = await self._request(p.SYNTHESIZE, {"text": text, "length_scale": length_scale})
        finished = False
        try:
            while True:
                frame = await queue.get()
                if isinstance(frame, Exception):
                    finished = True
                    raise frame
                if frame.kind == p.AUDIO:
                    yield frame.payload
                elif frame.kind == p.END:
                    finished = True
                    return
                else:
                    finished = True
                    raise RuntimeError(frame.json().get("message", "the speech pool failed"))
        finally:
            if finished:
                self._pending.pop(request_id, None)
            else:
                self._cancel(request_id)

    async def stats(self) -> dict[str, Any]:
        """The pool's counters (requests, cancellations, workers)."""
        await self.connect()
        queue: asyncio.Queue = asyncio.Queue()
        self._pending[0] = queue
        self._writer.write(p.pack(p.STATS, 0))
        frame = await queue.get()
        self._pending.pop(0, None)
        if isinstance(frame, Exception):
            raise frame
        return frame.json()

    async def _route(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await p.read_frame(reader)
                queue = self._pending.get(frame.request_id)
                if queue is not None:  # else: the rest of a cancelled request
                    queue.put_nowait(frame)
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, OSError, ValueError) as exc:
            self._lost("it closed the connection" if isinstance(exc, asyncio.IncompleteReadError) else str(exc))

    def _lost(self, why: str) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            logger.warning("Lost the speech pool at %s (%s); the next request reconnects", self.path, why)
        pending, self._pending = self._pending, {}
        for queue in pending.values():
            queue.put_nowait(
                PoolUnavailable(f"The connection to the speech pool at {self.path!r} ({self.setting}) was lost ({why})")
            )

    def close(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        pending, self._pending = self._pending, {}
        for queue in pending.values():
            queue.put_nowait(PoolUnavailable("the speech pool client was closed"))


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], PoolClient]] = (
    weakref.WeakKeyDictionary()
)


def client_for(path: str, setting: str) -> PoolClient:
    """The running loop's client for the pool at ``path`` used through ``setting``.

    Connections belong to one loop; speech in and speech out keep one each.
    """
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get((path, setting))
    if client is None:
        client = per_loop[(path, setting)] = PoolClient(path, setting)
    return client


def close_clients(path: str, setting: str) -> None:
    """Close every loop's client of ``path`` for ``setting`` (the backend using it was closed)."""
    for per_loop in list(_clients.values()):
        client = per_loop.pop((path, setting), None)
        if client is not None:
            try:
                client.close()
            except RuntimeError:  # its loop is closed
                pass
