"""The shared vendor WebSocket session, against local fake servers (127.0.0.1, free port)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mediastream.transcription.websocket import (
    ConnectionPolicy,
    SessionState,
    TranscriptionError,
    WebSocketTranscriptionSession,
)
from tests.vendors_stt import FakeVendorServer, VendorConnection
from tests.vendors_stt.listener import RecordingListener

FAST = ConnectionPolicy(
    connect_timeout=2.0, close_timeout=1.0, reconnect_delay=0.02, max_reconnect_attempts=3
)


class HandshakeServer(FakeVendorServer):
    """Answers ``hello`` with ``ready`` (``auto_ready``) and closes on ``bye`` (``close_on_bye``)."""

    def __init__(self, *, auto_ready: bool = True, close_on_bye: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.auto_ready = auto_ready
        self.close_on_bye = close_on_bye

    async def on_message(self, conn: VendorConnection, message: str | bytes) -> None:
        kind = json.loads(message).get("type") if isinstance(message, str) else None
        if kind == "hello" and self.auto_ready:
            await self.send({"type": "ready"}, conn)
        elif kind == "bye" and self.close_on_bye:
            await conn.ws.close(1000)

    def audio(self, conn: VendorConnection | None = None) -> list[bytes]:
        return (conn or self.connection).binary


class ToySession(WebSocketTranscriptionSession):
    """A minimal vendor: config ``hello``, ready on ``ready``, binary audio, ``bye`` to close."""

    provider = "Toy STT"

    def __init__(self, url: str, listener: RecordingListener, policy: ConnectionPolicy = FAST) -> None:
        super().__init__(stream_sid="MZ1", call_sid="CA1", listener=listener.listener, policy=policy)
        self.url = url
        self.lost = asyncio.Event()

    async def resolve_url(self) -> str:
        return self.url

    async def resolve_headers(self) -> dict[str, str]:
        return {"Authorization": "Toy secret"}

    async def on_open(self) -> None:
        await self.send_json({"type": "hello"})

    def encode_audio(self, audio: bytes) -> bytes:
        return audio

    def handle_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ready":
            self.mark_ready()
        elif kind == "error":
            self.provider_error(message["message"])
        elif kind == "final":
            self.emit_final(message["text"])

    def close_message(self) -> str:
        return json.dumps({"type": "bye"})

    def on_connection_lost(self) -> None:
        self.lost.set()


async def connected(server: HandshakeServer, rec: RecordingListener, **kw: Any) -> ToySession:
    session = ToySession(server.url, rec, **kw)
    await session.connect()
    return session


@pytest.mark.asyncio
async def test_audio_before_ready_is_queued_then_flushed_in_order():
    rec = RecordingListener()
    async with HandshakeServer(auto_ready=False) as server:
        session = ToySession(server.url, rec)
        session.send_audio(b"a" * 10)  # before connect() was even called
        connecting = asyncio.create_task(session.connect())
        conn = await server.wait_connections()
        await server.wait_for(lambda: conn.of_type("hello"))
        session.send_audio(b"b" * 10)
        session.send_audio(b"")  # ignored
        session.send_audio(b"c" * 10)
        assert server.audio() == [] and not connecting.done()
        await server.send({"type": "ready"})
        await connecting
        assert session.state is SessionState.READY
        await server.wait_for(lambda: len(server.audio()) == 3)
        assert server.audio() == [b"a" * 10, b"b" * 10, b"c" * 10]
        assert conn.headers["authorization"] == "Toy secret"
        assert conn.json[0] == {"type": "hello"}  # config first, audio after
        session.send_audio(b"d" * 10)
        await server.wait_for(lambda: len(server.audio()) == 4)
        await session.close()


@pytest.mark.asyncio
async def test_queue_cap_drops_the_oldest_audio():
    rec = RecordingListener()
    policy = ConnectionPolicy(connect_timeout=2.0, close_timeout=1.0, max_queue_bytes=300)
    async with HandshakeServer() as server:
        session = ToySession(server.url, rec, policy=policy)
        for i in range(5):
            session.send_audio(bytes([i]) * 100)
        assert (session.dropped_chunks, session.dropped_bytes) == (2, 200)
        await session.connect()
        await server.wait_for(lambda: len(server.audio()) == 3)
        assert server.audio() == [bytes([i]) * 100 for i in (2, 3, 4)]
        assert session.audio_offset_ms == 200 // 8  # the vendor's t=0 is stream byte 200
        await session.close()


@pytest.mark.asyncio
async def test_the_default_queue_cap_comes_from_settings():
    session = ToySession("ws://127.0.0.1:9/", RecordingListener(), policy=ConnectionPolicy())
    assert session.max_queue_bytes == 2 * 1024 * 1024


@pytest.mark.asyncio
async def test_malformed_json_is_reported_and_the_session_carries_on():
    rec = RecordingListener()
    async with HandshakeServer() as server:
        session = await connected(server, rec)
        await server.send("{not json")
        await server.send("[1, 2]")
        await server.send({"type": "final", "text": "still here"})
        await rec.wait_count("final")
        assert [str(e) for e in rec.errors][0].startswith("Toy STT sent malformed JSON")
        assert "not an object" in str(rec.errors[1])
        assert rec.finals == [("still here", None, None)]
        assert session.state is SessionState.READY
        await session.close()


@pytest.mark.asyncio
async def test_provider_error_after_ready_goes_to_on_error():
    rec = RecordingListener()
    async with HandshakeServer() as server:
        session = await connected(server, rec)
        await server.send({"type": "error", "message": "rate limited"})
        (error,) = await rec.wait_count("error")
        assert isinstance(error, TranscriptionError)
        assert str(error) == "Toy STT error: rate limited"
        assert session.state is SessionState.READY
        await session.close()


@pytest.mark.asyncio
async def test_listener_exceptions_stay_inside_dispatch():
    rec = RecordingListener()
    calls = []

    def broken_final(text, start_ms, end_ms):
        calls.append(text)
        raise RuntimeError("consumer bug")

    rec.listener.on_final = broken_final
    async with HandshakeServer() as server:
        session = await connected(server, rec)
        await server.send({"type": "final", "text": "one"})
        await server.send({"type": "error", "message": "after"})
        await rec.wait_count("error")
        assert calls == ["one"] and session.state is SessionState.READY
        await session.close()


@pytest.mark.asyncio
async def test_provider_error_before_ready_rejects_connect_without_retry():
    rec = RecordingListener()

    class Rejecting(HandshakeServer):
        async def on_message(self, conn, message):
            await self.send({"type": "error", "message": "bad model"}, conn)

    async with Rejecting() as server:
        session = ToySession(server.url, rec)
        with pytest.raises(TranscriptionError, match="^Toy STT error: bad model$"):
            await session.connect()
        assert session.state is SessionState.FAILED
        assert [str(e) for e in rec.errors] == ["Toy STT error: bad model"]
        await server.wait_for(lambda: server.connection.closed)
        assert len(server.connections) == 1  # no reconnect
        session.send_audio(b"x")  # ignored, never raises
        await session.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["stalled handshake", "never ready"])
async def test_connect_timeout(mode):
    rec = RecordingListener()
    policy = ConnectionPolicy(connect_timeout=0.3, close_timeout=0.2)
    server_options = {"stall_handshake": True} if mode == "stalled handshake" else {"auto_ready": False}
    async with HandshakeServer(**server_options) as server:
        session = ToySession(server.url, rec, policy=policy)
        with pytest.raises(TranscriptionError, match="^Toy STT connection timed out after 0.3 s$"):
            await session.connect()
        assert len(rec.errors) == 1
        await session.close()


@pytest.mark.asyncio
async def test_close_before_ready_has_its_own_message():
    rec = RecordingListener()

    class Closing(HandshakeServer):
        async def on_message(self, conn, message):
            await conn.ws.close(4001, "bad config")

    async with Closing() as server:
        session = ToySession(server.url, rec)
        with pytest.raises(TranscriptionError) as info:
            await session.connect()
        assert str(info.value) == "Toy STT closed the connection before ready (code 4001: bad config)"


@pytest.mark.asyncio
async def test_http_refusal_names_the_status():
    rec = RecordingListener()
    async with HandshakeServer(refuse_status=401) as server:
        session = ToySession(server.url, rec)
        with pytest.raises(TranscriptionError, match="^Toy STT refused the connection: HTTP 401$"):
            await session.connect()


@pytest.mark.asyncio
async def test_connection_refused():
    rec = RecordingListener()
    async with HandshakeServer() as server:
        url = server.url
    session = ToySession(url, rec)  # the server is gone: nothing listens on the port
    with pytest.raises(TranscriptionError, match="^Toy STT connection failed: "):
        await session.connect()


@pytest.mark.asyncio
async def test_reconnect_after_a_drop_delivers_audio_sent_during_the_gap():
    rec = RecordingListener()
    policy = ConnectionPolicy(connect_timeout=2.0, close_timeout=1.0, reconnect_delay=0.05)
    async with HandshakeServer() as server:
        session = await connected(server, rec, policy=policy)
        session.send_audio(b"1" * 8)
        first = server.connection
        await server.wait_for(lambda: len(first.binary) == 1)
        await server.drop(first)
        await asyncio.wait_for(session.lost.wait(), 2)
        assert session.state is SessionState.RECONNECTING
        session.send_audio(b"2" * 8)
        session.send_audio(b"3" * 8)
        second = await server.wait_connections(2)
        await server.wait_for(lambda: len(second.binary) == 2)
        assert second.binary == [b"2" * 8, b"3" * 8]
        assert second.json[0] == {"type": "hello"}  # reconfigured before the audio
        assert session.state is SessionState.READY and session.reconnects == 1
        assert session.audio_offset_ms == 1  # 8 bytes went out on the first connection
        assert rec.errors == []
        await session.close()


@pytest.mark.asyncio
async def test_reconnect_limit_is_reported():
    rec = RecordingListener()
    async with HandshakeServer() as server:
        session = await connected(server, rec)
        server.refuse_status = 503  # every reconnect attempt is refused
        await server.drop()
        (error,) = await rec.wait_count("error")
        assert str(error) == "Toy STT reconnect limit reached (3 attempts)"
        assert session.state is SessionState.FAILED
        assert len(server.attempts) == 1 + 3
        session.send_audio(b"late")  # ignored
        await session.close()


@pytest.mark.asyncio
async def test_close_flushes_sends_the_close_message_and_waits_for_the_vendor():
    rec = RecordingListener()

    class Flushing(HandshakeServer):
        async def on_message(self, conn, message):
            if isinstance(message, str) and json.loads(message)["type"] == "bye":
                await self.send({"type": "final", "text": "last words"}, conn)
            await super().on_message(conn, message)

    async with Flushing() as server:
        session = await connected(server, rec)
        session.send_audio(b"tail")
        await session.close()
        conn = server.connection
        assert conn.received[-2] == b"tail"
        assert json.loads(conn.received[-1]) == {"type": "bye"}
        assert rec.finals == [("last words", None, None)]  # delivered before close() returned
        assert session.state is SessionState.CLOSED
        await server.wait_for(lambda: conn.closed)
        await session.close()  # idempotent
        session.send_audio(b"after")  # ignored
        assert conn.binary == [b"tail"]


@pytest.mark.asyncio
async def test_close_forces_the_socket_shut_when_the_vendor_does_not_answer():
    rec = RecordingListener()
    policy = ConnectionPolicy(connect_timeout=2.0, close_timeout=0.3)
    async with HandshakeServer(close_on_bye=False) as server:
        session = await connected(server, rec, policy=policy)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await session.close()
        assert loop.time() - started < 1.0
        await server.wait_for(lambda: server.connection.closed)
        assert server.connection.of_type("bye")


@pytest.mark.asyncio
async def test_closing_while_connecting_leaves_no_socket_open():
    rec = RecordingListener()
    async with HandshakeServer(stall_handshake=True) as server:
        session = ToySession(server.url, rec)
        connecting = asyncio.create_task(session.connect())
        await server.wait_for(lambda: server.attempts)
        await session.close()
        with pytest.raises(TranscriptionError, match="closed while connecting"):
            await connecting
        await asyncio.wait_for(server.attempts[0].wait_closed(), 2)
        assert server.connections == []


@pytest.mark.asyncio
async def test_connect_after_close_fails_and_opens_nothing():
    rec = RecordingListener()
    async with HandshakeServer() as server:
        session = ToySession(server.url, rec)
        await session.close()
        with pytest.raises(TranscriptionError, match="closed"):
            await session.connect()
        assert server.attempts == []


class SlowResolveSession(ToySession):
    """Resolves its URL only when the test says so (like fetching a short-lived token)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resolving = asyncio.Event()
        self.release = asyncio.Event()

    async def resolve_url(self) -> str:
        self.resolving.set()
        await self.release.wait()
        return self.url


@pytest.mark.asyncio
async def test_the_connect_timeout_covers_url_resolution():
    rec = RecordingListener()
    async with HandshakeServer() as server:
        session = SlowResolveSession(server.url, rec, policy=ConnectionPolicy(connect_timeout=0.2))
        with pytest.raises(TranscriptionError, match="timed out"):
            await session.connect()
        assert server.attempts == []


@pytest.mark.asyncio
async def test_closing_during_url_resolution_never_opens_a_socket():
    rec = RecordingListener()
    async with HandshakeServer() as server:
        session = SlowResolveSession(server.url, rec)
        connecting = asyncio.create_task(session.connect())
        await asyncio.wait_for(session.resolving.wait(), 2)
        await session.close()
        session.release.set()
        with pytest.raises(TranscriptionError, match="closed while connecting"):
            await connecting
        assert server.attempts == []


@pytest.mark.asyncio
async def test_closing_during_the_reconnect_backoff_stops_reconnecting():
    rec = RecordingListener()
    policy = ConnectionPolicy(connect_timeout=2.0, close_timeout=1.0, reconnect_delay=30.0)
    async with HandshakeServer() as server:
        session = await connected(server, rec, policy=policy)
        await server.drop()
        await asyncio.wait_for(session.lost.wait(), 2)
        session.send_audio(b"gap")
        await asyncio.wait_for(session.close(), 2)  # does not wait out the 30 s backoff
        assert session.state is SessionState.CLOSED
        assert len(server.attempts) == 1 and rec.errors == []
