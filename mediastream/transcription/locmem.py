"""A transcription backend for tests: records audio and lets the test speak for the provider.

Like Django's locmem mail backend, nothing leaves the process. Each session is
appended to ``backend.sessions`` (the backend is built once per process by
``backends.transcription``, so tests reach it there), keeps every audio
chunk it was given, and exposes ``emit_partial`` / ``emit_final`` /
``emit_speech_started`` / ``emit_error`` so a test can play the provider.

Options:

* ``FAIL_CONNECT``: if set, ``connect()`` raises ``ConnectionError`` with this message.
* ``HOLD_CONNECT`` (default False): ``connect()`` waits until the test calls
  ``session.release_connect()`` (or ``release_connect(error)`` to fail it),
  to test what happens while the provider is still connecting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .base import BaseTranscriptionBackend, BaseTranscriptionSession, TranscriptionListener

__all__ = ["Conditions", "LocmemBackend", "LocmemSession"]


class Conditions:
    """Wait until a predicate over some state holds; whoever changes that state calls ``notify()``.

    Lets tests (and this backend's sessions) wait on events instead of sleeping.
    """

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        if predicate():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters = [w for w in self._waiters if w[1] is not waiter]

    def notify(self) -> None:
        for predicate, waiter in self._waiters:
            if not waiter.done() and predicate():
                waiter.set_result(None)


class LocmemSession(BaseTranscriptionSession):
    """Records what the consumer does; the test drives the listener."""

    def __init__(
        self,
        *,
        stream_sid: str,
        call_sid: str,
        listener: TranscriptionListener,
        fail_connect: str | None = None,
        hold_connect: bool = False,
    ) -> None:
        super().__init__(stream_sid=stream_sid, call_sid=call_sid, listener=listener)
        self.chunks: list[bytes] = []
        self.connect_calls = 0
        self.close_calls = 0
        self.closed = False
        self._fail_connect = fail_connect
        self._hold: asyncio.Future[None] | None = None
        self._hold_connect = hold_connect
        self.received_bytes = 0
        self._conditions = Conditions()

    # --- the session contract -------------------------------------------------
    async def connect(self) -> None:
        """Succeed, fail with ``FAIL_CONNECT``, or wait for ``release_connect()``."""
        self.connect_calls += 1
        if self._hold_connect:
            self._hold = asyncio.get_running_loop().create_future()
            self._changed()
            await self._hold
        if self._fail_connect:
            raise ConnectionError(self._fail_connect)
        self._changed()

    def send_audio(self, audio: bytes) -> None:
        """Record non-empty audio until closed."""
        if audio and not self.closed:
            self.chunks.append(bytes(audio))
            self.received_bytes += len(audio)
            self._changed()

    async def close(self) -> None:
        """Mark closed (counted, so tests can assert exactly-once teardown)."""
        self.close_calls += 1
        self.closed = True
        if self._hold is not None and not self._hold.done():
            self._hold.set_exception(ConnectionError("session closed while connecting"))
        self._changed()

    # --- test helpers -----------------------------------------------------------
    @property
    def audio(self) -> bytes:
        """All audio received, concatenated."""
        return b"".join(self.chunks)

    def release_connect(self, error: Exception | None = None) -> None:
        """Let a held ``connect()`` finish (or fail with ``error``)."""
        if self._hold is None:
            raise RuntimeError("connect() is not being held (HOLD_CONNECT) or not called yet")
        if not self._hold.done():
            if error is None:
                self._hold.set_result(None)
            else:
                self._hold.set_exception(error)

    def emit_partial(self, text: str) -> None:
        self.listener.on_partial(text)

    def emit_final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> None:
        self.listener.on_final(text, start_ms, end_ms)

    def emit_speech_started(self) -> None:
        self.listener.on_speech_started()

    def emit_error(self, exc: Exception) -> None:
        self.listener.on_error(exc)

    async def wait_for_audio(self, min_bytes: int, timeout: float = 5.0) -> bytes:
        """Wait until at least ``min_bytes`` of audio arrived; return it all."""
        await self._wait(lambda: self.received_bytes >= min_bytes, timeout)
        return self.audio

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await self._wait(lambda: self.closed, timeout)

    async def wait_connect_called(self, timeout: float = 5.0) -> None:
        await self._wait(lambda: self.connect_calls > 0, timeout)

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        await self._conditions.wait_for(predicate, timeout)

    def _changed(self) -> None:
        self._conditions.notify()


class LocmemBackend(BaseTranscriptionBackend):
    """Keeps every session it made in ``self.sessions``."""

    def __init__(
        self,
        *,
        FAIL_CONNECT: str | None = None,
        HOLD_CONNECT: bool = False,
    ) -> None:
        super().__init__()
        self.fail_connect = FAIL_CONNECT
        self.hold_connect = HOLD_CONNECT
        self.sessions: list[LocmemSession] = []

    def create_session(
        self, *, stream_sid: str, call_sid: str, listener: TranscriptionListener
    ) -> LocmemSession:
        session = LocmemSession(
            stream_sid=stream_sid,
            call_sid=call_sid,
            listener=listener,
            fail_connect=self.fail_connect,
            hold_connect=self.hold_connect,
        )
        self.sessions.append(session)
        return session
