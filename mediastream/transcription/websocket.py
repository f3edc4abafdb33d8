"""The WebSocket plumbing shared by streaming speech-to-text vendors.

Every vendor (OpenAI Realtime, Deepgram, ...) is "open a WebSocket, send a
config message, wait until the vendor says it is ready, stream audio, read
JSON events". :class:`WebSocketTranscriptionSession` does all of that once,
with the guarantees below, and leaves five small hooks to a subclass:

* ``resolve_url()`` / ``resolve_headers()``: where to connect and how to
  authenticate (async, resolved inside the connect timeout);
* ``on_open()``: send the session configuration (``await self.send_json(...)``);
* ``encode_audio(mulaw) -> str | bytes``: one audio message;
* ``handle_message(dict)``: map a vendor event to ``emit_partial`` /
  ``emit_final`` / ``emit_speech_started`` / ``provider_error`` /
  ``mark_ready``;
* ``close_message()`` and ``keepalive_message()`` (optional).

Guarantees:

* ``send_audio()`` is O(1) and never awaits: chunks go into a queue that a
  sender task drains while the connection is ready. Audio sent before
  readiness or during a reconnect waits in the queue, which is capped at
  ``TRANSCRIPTION_QUEUE_BYTES``; over the cap the **oldest** chunks are dropped
  (counted in ``dropped_bytes`` / ``dropped_chunks``). Empty audio and audio
  after ``close()`` are ignored.
* ``connect()`` resolves when the vendor is ready (on open, or on a handshake
  event) and then the queue is flushed in order. Any failure before that
  (timeout, refused socket, HTTP error, vendor error event, close before
  ready) rejects ``connect()`` with a :class:`TranscriptionError` that names the
  vendor and what happened, is also reported through ``listener.on_error``, and
  is never retried.
* A connection lost after readiness is reopened with backoff
  (``RECONNECT_DELAY`` × 2^(attempt−1), at most ``MAX_RECONNECT_ATTEMPTS``);
  running out reports "reconnect limit reached" through ``on_error`` and the
  session stops.
* Vendor error events and malformed JSON go to ``listener.on_error``; the
  session carries on. Exceptions raised by listener callbacks are logged and
  never escape into message dispatch or mask the original error.
* ``close()`` is idempotent: it flushes queued audio, sends the vendor's close
  message and waits (up to ``CLOSE_TIMEOUT``) for the vendor to finish and close,
  then force-closes. Closing while connecting cancels the attempt and never
  leaves a socket open.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ..metrics import VENDOR_RECONNECTS
from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = [
    "ConnectionPolicy",
    "SessionState",
    "TranscriptionError",
    "WebSocketTranscriptionBackend",
    "WebSocketTranscriptionSession",
]

logger = logging.getLogger(__name__)

_BYTES_PER_MS = 8  # 8 kHz mu-law


class TranscriptionError(Exception):
    """A transcription provider failed; the message names the provider and what happened."""


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """Timeouts, retries and the queue cap (seconds)."""

    connect_timeout: float = 10.0
    close_timeout: float = 5.0
    max_reconnect_attempts: int = 5
    reconnect_delay: float = 1.0
    #: Cap on audio held while not connected; ``None``: ``TRANSCRIPTION_QUEUE_BYTES``.
    max_queue_bytes: int | None = None

    def delay_before(self, attempt: int) -> float:
        """Backoff before reconnect ``attempt`` (1-based): 1 s, 2 s, 4 s, ..."""
        return self.reconnect_delay * 2 ** (attempt - 1)


class SessionState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    FAILED = "failed"  # connect failed or the reconnect limit was reached
    CLOSED = "closed"


class WebSocketTranscriptionSession(BaseTranscriptionSession):
    """One vendor WebSocket per stream. Subclasses fill in the hooks below."""

    #: Names the vendor in every error message ("OpenAI Realtime", "Deepgram").
    provider = "WebSocket transcription"
    #: Ready as soon as the socket opens (else wait for ``mark_ready()``).
    ready_on_open = False
    #: Send ``keepalive_message()`` after this many seconds without audio.
    keepalive_interval: float | None = None

    def __init__(
        self,
        *,
        stream_sid: str,
        call_sid: str,
        listener: TranscriptionListener,
        policy: ConnectionPolicy | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(stream_sid=stream_sid, call_sid=call_sid, listener=listener)
        #: The backend's vendor options (URL, key, model, ...).
        self.config: dict[str, Any] = config or {}
        self.policy = policy or ConnectionPolicy()
        cap = self.policy.max_queue_bytes
        if cap is None:
            from ..conf import app_settings

            cap = app_settings.TRANSCRIPTION_QUEUE_BYTES
        self.max_queue_bytes: int = int(cap)
        self.state = SessionState.NEW
        #: Audio dropped from the front of a full queue.
        self.dropped_bytes = 0
        self.dropped_chunks = 0
        #: Successful reconnects so far.
        self.reconnects = 0
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._accepted_bytes = 0
        self._connection_offset_bytes = 0
        self._accepting = True
        self._wakeup = asyncio.Event()  # audio queued
        self._idle = asyncio.Event()  # queue empty while connected
        self._closing = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._connected: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._close_task: asyncio.Future[None] | None = None

    # --- hooks for subclasses ---------------------------------------------------
    async def resolve_url(self) -> str:
        """The ``wss://`` URL to open (may do I/O; runs inside the connect timeout)."""
        raise NotImplementedError(
            "subclasses of WebSocketTranscriptionSession must provide a resolve_url() method"
        )

    async def resolve_headers(self) -> dict[str, str]:
        """Headers for the upgrade request, e.g. ``Authorization``."""
        return {}

    async def on_open(self) -> None:
        """The socket is open: send the session configuration here."""

    def encode_audio(self, audio: bytes) -> str | bytes:
        """One mu-law chunk as a WebSocket message (text JSON or binary)."""
        raise NotImplementedError(
            "subclasses of WebSocketTranscriptionSession must provide an encode_audio() method"
        )

    def handle_message(self, message: dict[str, Any]) -> None:
        """One JSON object from the vendor."""
        raise NotImplementedError(
            "subclasses of WebSocketTranscriptionSession must provide a handle_message() method"
        )

    def close_message(self) -> str | bytes | None:
        """Sent by ``close()``; the vendor is then expected to finish and close. None: just close."""
        return None

    def keepalive_message(self) -> str | bytes | None:
        """Sent every ``keepalive_interval`` seconds while no audio flows."""
        return None

    def on_connection_lost(self) -> None:
        """The connection dropped after readiness; reset per-connection vendor state here."""

    # --- helpers for subclasses -------------------------------------------------
    def mark_ready(self) -> None:
        """The vendor accepted the configuration: start streaming audio."""
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(None)

    def provider_error(self, detail: str) -> None:
        """A vendor error event: fails the connection attempt before readiness, else ``on_error``."""
        error = TranscriptionError(f"{self.provider} error: {detail}")
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(error)
        else:
            self.report_error(error)

    async def send_json(self, message: dict[str, Any]) -> None:
        """Send one JSON message on the current connection."""
        if self._ws is None:
            raise TranscriptionError(f"{self.provider} is not connected")
        await self._ws.send(json.dumps(message, separators=(",", ":")))

    @property
    def audio_offset_ms(self) -> int:
        """Stream time (ms) of the first audio byte sent on the current connection.

        Vendors time events from the start of *their* connection; add this to
        get stream offsets that survive reconnects.
        """
        return self._connection_offset_bytes // _BYTES_PER_MS

    def emit_partial(self, text: str) -> None:
        self._call(self.listener.on_partial, text)

    def emit_final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> None:
        self._call(self.listener.on_final, text, start_ms, end_ms)

    def emit_speech_started(self) -> None:
        self._call(self.listener.on_speech_started)

    def report_error(self, error: Exception) -> None:
        logger.warning("Transcription error on stream %s: %s", self.stream_sid, error)
        self._call(self.listener.on_error, error)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception(
                "%s listener %s raised (stream %s)",
                self.provider,
                getattr(callback, "__name__", callback),
                self.stream_sid,
            )

    # --- the session contract ---------------------------------------------------
    async def connect(self) -> None:
        """Open the connection; return when the vendor is ready. Raises :class:`TranscriptionError`."""
        if self._connected is None:
            if self._close_task is not None:
                raise TranscriptionError(f"{self.provider} session is closed")
            self._connected = asyncio.get_running_loop().create_future()
            self.state = SessionState.CONNECTING
            self._supervisor = asyncio.create_task(
                self._run(), name=f"stt-{self.provider}-{self.stream_sid}"
            )
        await asyncio.shield(self._connected)

    def send_audio(self, audio: bytes) -> None:
        """Queue mu-law audio for the sender task. O(1); never blocks, never raises."""
        if not audio or not self._accepting:
            return
        chunk = bytes(audio)
        self._queue.append(chunk)
        self._queued_bytes += len(chunk)
        self._accepted_bytes += len(chunk)
        if self._queued_bytes > self.max_queue_bytes:
            self._drop_oldest()
        self._idle.clear()
        self._wakeup.set()

    async def close(self) -> None:
        """Flush, say goodbye to the vendor and release the socket. Safe to call twice."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._close_task)

    # --- internals --------------------------------------------------------------
    def _drop_oldest(self) -> None:
        first_drop = self.dropped_chunks == 0
        while self._queued_bytes > self.max_queue_bytes and len(self._queue) > 1:
            dropped = self._queue.popleft()
            self._queued_bytes -= len(dropped)
            self.dropped_bytes += len(dropped)
            self.dropped_chunks += 1
        if first_drop and self.dropped_chunks:
            logger.warning(
                "%s (stream %s): audio queue over %d bytes, dropping the oldest audio",
                self.provider,
                self.stream_sid,
                self.max_queue_bytes,
            )

    async def _run(self) -> None:
        """Connect, serve, reconnect; owns the socket until the session ends."""
        assert self._connected is not None
        try:
            try:
                ws = await self._open()
            except TranscriptionError as error:
                self.state = SessionState.FAILED
                self._accepting = False
                self._clear_queue()
                self._connected.set_exception(error)
                self.report_error(error)
                return
            self.state = SessionState.READY
            self._connected.set_result(None)
            while True:
                await self._serve(ws)
                if self._closing.is_set():
                    return
                self._abort_socket()
                self.state = SessionState.RECONNECTING
                logger.warning(
                    "%s (stream %s): connection lost, reconnecting", self.provider, self.stream_sid
                )
                self._call(self.on_connection_lost)
                reopened = await self._reconnect()
                if reopened is None:
                    return
                ws = reopened
                self.reconnects += 1
                VENDOR_RECONNECTS.labels("stt", self.provider).inc()
                self.state = SessionState.READY
        except asyncio.CancelledError:
            if not self._connected.done():
                self._connected.set_exception(
                    TranscriptionError(f"{self.provider} session closed while connecting")
                )
            raise
        finally:
            self._abort_socket()

    async def _reconnect(self) -> ClientConnection | None:
        """Reopen with backoff; ``None`` when closing or out of attempts."""
        for attempt in range(1, self.policy.max_reconnect_attempts + 1):
            try:
                await asyncio.wait_for(self._closing.wait(), self.policy.delay_before(attempt))
                return None  # close() was called during the backoff
            except TimeoutError:
                pass
            try:
                return await self._open()
            except TranscriptionError as error:
                logger.warning(
                    "%s (stream %s): reconnect attempt %d/%d failed: %s",
                    self.provider,
                    self.stream_sid,
                    attempt,
                    self.policy.max_reconnect_attempts,
                    error,
                )
        self.state = SessionState.FAILED
        self._accepting = False
        self._clear_queue()
        self.report_error(
            TranscriptionError(
                f"{self.provider} reconnect limit reached "
                f"({self.policy.max_reconnect_attempts} attempts)"
            )
        )
        return None

    async def _open(self) -> ClientConnection:
        """One connection attempt up to readiness, all inside the connect timeout."""
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        self._handshake = handshake
        timeout = self.policy.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                url = await self.resolve_url()
                headers = await self.resolve_headers()
                ws = await ws_connect(
                    url,
                    additional_headers=headers,
                    open_timeout=None,  # covered by the timeout around this block
                    close_timeout=self.policy.close_timeout,
                    compression=None,  # mu-law does not deflate; save the CPU
                )
                self._ws = ws
                self._reader = asyncio.create_task(self._read(ws, handshake))
                await self.on_open()
                if self.ready_on_open:
                    self.mark_ready()
                await handshake
        except TimeoutError:
            error = TranscriptionError(f"{self.provider} connection timed out after {timeout:g} s")
        except TranscriptionError as exc:
            error = exc
        except InvalidStatus as exc:
            error = TranscriptionError(
                f"{self.provider} refused the connection: HTTP {exc.response.status_code}"
            )
        except ConnectionClosed as exc:
            error = TranscriptionError(f"{self.provider} closed the connection before ready{_why(exc)}")
        except (OSError, WebSocketException) as exc:
            error = TranscriptionError(f"{self.provider} connection failed: {exc}")
        except asyncio.CancelledError:
            self._handshake = None
            self._abort_socket()
            raise
        except Exception as exc:  # a bug in a hook: still a failed attempt, never a crash
            logger.exception("%s (stream %s): connection setup raised", self.provider, self.stream_sid)
            error = TranscriptionError(f"{self.provider} connection setup failed: {exc!r}")
        else:
            self._handshake = None
            self._connection_offset_bytes = self._accepted_bytes - self._queued_bytes
            return ws
        finally:
            if handshake.done() and not handshake.cancelled():
                handshake.exception()  # retrieved: no "never retrieved" warning
        self._handshake = None
        self._abort_socket()
        raise error

    async def _read(self, ws: ClientConnection, handshake: asyncio.Future[None]) -> None:
        """Dispatch vendor messages until the connection ends."""
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    logger.debug("%s sent %d binary bytes; ignored", self.provider, len(raw))
                    continue
                try:
                    message = json.loads(raw)
                except ValueError as exc:
                    self.report_error(TranscriptionError(f"{self.provider} sent malformed JSON: {exc}"))
                    continue
                if not isinstance(message, dict):
                    self.report_error(
                        TranscriptionError(f"{self.provider} sent JSON that is not an object")
                    )
                    continue
                try:
                    self.handle_message(message)
                except Exception:
                    logger.exception(
                        "%s (stream %s): handling %r failed",
                        self.provider,
                        self.stream_sid,
                        message.get("type"),
                    )
        except ConnectionClosed:
            pass
        finally:
            if self._handshake is handshake and not handshake.done():
                handshake.set_exception(
                    TranscriptionError(
                        f"{self.provider} closed the connection before ready{_close_info(ws)}"
                    )
                )

    async def _serve(self, ws: ClientConnection) -> None:
        """Stream queued audio until the connection ends."""
        assert self._reader is not None
        reader = self._reader
        sender = asyncio.create_task(self._send_loop(ws))
        try:
            await asyncio.shield(reader)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send_loop(self, ws: ClientConnection) -> None:
        last_sent = time.monotonic()
        interval = self.keepalive_interval
        while True:
            while self._queue:
                chunk = self._queue.popleft()
                self._queued_bytes -= len(chunk)
                try:
                    await ws.send(self.encode_audio(chunk))
                except ConnectionClosed:
                    self._queue.appendleft(chunk)  # resent after the reconnect
                    self._queued_bytes += len(chunk)
                    return
                last_sent = time.monotonic()
            self._idle.set()
            self._wakeup.clear()
            if interval is None:
                await self._wakeup.wait()
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, last_sent + interval - time.monotonic()))
            except TimeoutError:
                message = self.keepalive_message()
                if message is not None:
                    try:
                        await ws.send(message)
                    except ConnectionClosed:
                        return
                last_sent = time.monotonic()

    async def _shutdown(self) -> None:
        self._accepting = False
        self._closing.set()
        ws, reader = self._ws, self._reader
        if self.state is SessionState.READY and ws is not None and reader is not None:
            try:
                async with asyncio.timeout(self.policy.close_timeout):
                    await _first(self._idle.wait(), asyncio.shield(reader))
                    message = self.close_message()
                    if message is not None and not reader.done():
                        await ws.send(message)
                        await asyncio.shield(reader)  # the vendor flushes its results, then closes
                    await ws.close()
            except TimeoutError:
                logger.info("%s (stream %s): close timed out; forcing", self.provider, self.stream_sid)
            except ConnectionClosed:
                pass
            except Exception:
                logger.exception("%s (stream %s): graceful close failed", self.provider, self.stream_sid)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        self._abort_socket()
        self._clear_queue()
        if self.dropped_chunks:
            logger.warning(
                "%s (stream %s): %d audio chunks (%d bytes) were dropped",
                self.provider,
                self.stream_sid,
                self.dropped_chunks,
                self.dropped_bytes,
            )
        if self.state is not SessionState.FAILED:
            self.state = SessionState.CLOSED

    def _abort_socket(self) -> None:
        ws, self._ws = self._ws, None
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    def _clear_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _why(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return ""
    return f" (code {frame.code}{': ' + frame.reason if frame.reason else ''})"


def _close_info(ws: ClientConnection) -> str:
    if ws.close_code is None:
        return ""
    return f" (code {ws.close_code}{': ' + ws.close_reason if ws.close_reason else ''})"


class WebSocketTranscriptionBackend(BaseTranscriptionBackend):
    """Options every WebSocket vendor backend shares (seconds).

    Subclasses set ``session_class`` and put their vendor options in ``self.config``.
    """

    session_class: type[WebSocketTranscriptionSession]

    def __init__(
        self,
        *,
        CONNECT_TIMEOUT: float = 10.0,
        CLOSE_TIMEOUT: float = 5.0,
        MAX_RECONNECT_ATTEMPTS: int = 5,
        RECONNECT_DELAY: float = 1.0,
        QUEUE_BYTES: int | None = None,
    ) -> None:
        super().__init__()
        self.policy = ConnectionPolicy(
            connect_timeout=CONNECT_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            max_reconnect_attempts=MAX_RECONNECT_ATTEMPTS,
            reconnect_delay=RECONNECT_DELAY,
            max_queue_bytes=QUEUE_BYTES,
        )

    def create_session(
        self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener
    ) -> WebSocketTranscriptionSession:
        return self.session_class(
            stream_sid=stream_sid, call_sid=call_sid, listener=listener, config=self.config, policy=self.policy
        )
