"""The shared part of the fake vendor servers: an aiohttp app that records requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

__all__ = ["FakeVendorServer", "RecordedRequest", "tone_pcm"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def tone_pcm(
    text: str, *, sample_rate: int = 24000, ms_per_char: float = 40.0, frequency: float = 440.0
) -> bytes:
    """PCM16 LE of a sine whose length follows the text: recognisable, cheap audio."""
    n = max(1, int(sample_rate * ms_per_char * max(len(text), 1) / 1000))
    t = np.arange(n) / sample_rate
    return np.rint(8000 * np.sin(2 * np.pi * frequency * t)).astype("<i2").tobytes()


class FakeVendorServer:
    """Base class: serves ``routes()`` on 127.0.0.1, records requests, streams chunked bodies.

    ``hold``: when given, every audio response stops after its first chunk
    until the event is set (``first_chunk_sent`` is set at that point), so a
    test can prove the client yields audio before the response is complete.
    ``fail_with=(status, json_body)`` answers every request with that error.
    """

    def __init__(
        self,
        *,
        chunk_size: int = 1001,
        hold: asyncio.Event | None = None,
        fail_with: tuple[int, Any] | None = None,
    ) -> None:
        self.chunk_size = chunk_size
        self.hold = hold
        self.fail_with = fail_with
        self.requests: list[RecordedRequest] = []
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._arrived: asyncio.Condition | None = None
        self.first_chunk_sent: asyncio.Event | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError("subclasses of FakeVendorServer must provide routes()")

    @property
    def origin(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running (use it with 'async with')")
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeVendorServer:
        self._arrived = asyncio.Condition()
        self.first_chunk_sent = asyncio.Event()
        app = web.Application(middlewares=[self._record])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.hold is not None:
            self.hold.set()  # never leave a handler parked on a test's event
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None

    async def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until ``count`` requests have arrived; returns them all."""
        assert self._arrived is not None
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        if self.fail_with is not None:
            status, payload = self.fail_with
            return web.json_response(payload, status=status)
        return await handler(request)

    async def stream_audio(self, request: web.Request, audio: bytes, content_type: str) -> web.StreamResponse:
        """Send ``audio`` with chunked transfer encoding, ``chunk_size`` bytes per write."""
        response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for offset in range(0, len(audio), self.chunk_size):
            await response.write(audio[offset : offset + self.chunk_size])
            if offset == 0 and self.hold is not None:
                assert self.first_chunk_sent is not None
                self.first_chunk_sent.set()
                await self.hold.wait()
        await response.write_eof()
        return response
