"""Local fake speech-to-text vendor servers (WebSocket, 127.0.0.1, a free port).

Each server is an async context manager that records every connection (the
upgrade request's path, query and headers, and every message received) and
lets the test push vendor messages or drop the connection. Vendor fakes
(:mod:`.openai_realtime`, :mod:`.deepgram`) answer the handshake the way the
real service does, so the same servers serve unit tests, end-to-end tests and
benchmarks. Tests wait on what the server saw with :meth:`FakeVendorServer.wait_for`
(event-driven, no polling sleeps).

Failure modes for connection tests:

* ``refuse_status=401``: answer the upgrade with that HTTP status;
* ``stall_handshake=True``: accept TCP but never answer the upgrade.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mediastream.transcription.locmem import Conditions

__all__ = ["FakeVendorServer", "VendorConnection"]


@dataclass
class VendorConnection:
    """One client connection as the fake vendor saw it."""

    ws: ServerConnection
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    received: list[str | bytes] = field(default_factory=list)
    closed: bool = False

    @property
    def json(self) -> list[dict[str, Any]]:
        """Text messages that parsed as JSON objects, in order."""
        out = []
        for message in self.received:
            if isinstance(message, str):
                try:
                    value = json.loads(message)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    out.append(value)
        return out

    @property
    def binary(self) -> list[bytes]:
        return [m for m in self.received if isinstance(m, bytes)]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.json if m.get("type") == kind]


class FakeVendorServer:
    """A WebSocket server that records clients; subclasses add vendor behaviour."""

    path = "/"

    def __init__(self, *, refuse_status: int | None = None, stall_handshake: bool = False) -> None:
        self.refuse_status = refuse_status
        self.stall_handshake = stall_handshake
        self.connections: list[VendorConnection] = []
        #: Server-side objects of upgrade requests seen (including stalled/refused ones).
        self.attempts: list[ServerConnection] = []
        self._server: Server | None = None
        self._conditions = Conditions()
        self._stall = asyncio.Event()

    # --- lifecycle --------------------------------------------------------------
    async def __aenter__(self) -> FakeVendorServer:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
        )
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._server is not None
        self._stall.set()
        self._server.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    @property
    def connection(self) -> VendorConnection:
        """The latest connection."""
        return self.connections[-1]

    # --- waiting ----------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever something is recorded)."""
        await self._conditions.wait_for(predicate, timeout)

    async def wait_connections(self, count: int = 1, timeout: float = 5.0) -> VendorConnection:
        await self.wait_for(lambda: len(self.connections) >= count, timeout)
        return self.connections[count - 1]

    def _changed(self) -> None:
        self._conditions.notify()

    # --- acting as the vendor -----------------------------------------------------
    async def send(
        self, message: dict[str, Any] | str | bytes, connection: VendorConnection | None = None
    ) -> None:
        """Send a message (dicts as JSON text) on ``connection`` (default: the latest)."""
        conn = connection or self.connection
        data = json.dumps(message) if isinstance(message, dict) else message
        await conn.ws.send(data)

    async def drop(self, connection: VendorConnection | None = None) -> None:
        """Kill the TCP connection without a closing handshake (a network failure)."""
        conn = connection or self.connection
        conn.ws.transport.abort()
        await self.wait_for(lambda: conn.closed)

    async def close(
        self, code: int = 1000, reason: str = "", connection: VendorConnection | None = None
    ) -> None:
        """Close the connection cleanly with ``code``."""
        conn = connection or self.connection
        await conn.ws.close(code, reason)

    # --- hooks for vendor fakes ---------------------------------------------------
    async def on_connect(self, conn: VendorConnection) -> None:
        """A client connected (e.g. a vendor greeting)."""

    async def on_message(self, conn: VendorConnection, message: str | bytes) -> None:
        """Answer a client message (after it is recorded)."""

    # --- internals ----------------------------------------------------------------
    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.attempts.append(ws)
        self._changed()
        if self.stall_handshake:
            await self._stall.wait()
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "stalled\n")
        if self.refuse_status is not None:
            return ws.respond(HTTPStatus(self.refuse_status), "refused\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        target = urlsplit(ws.request.path)
        conn = VendorConnection(
            ws=ws,
            path=target.path,
            query={k: v[-1] for k, v in parse_qs(target.query).items()},
            headers={k.lower(): v for k, v in ws.request.headers.raw_items()},
        )
        self.connections.append(conn)
        self._changed()
        try:
            await self.on_connect(conn)
            async for message in ws:
                conn.received.append(message)
                self._changed()
                await self.on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._changed()
