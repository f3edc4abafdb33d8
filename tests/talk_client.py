"""The browser's side of the talk relay, for tests and the benchmark: a real daphne, a staff cookie, a client.

:func:`relay_server` runs daphne with a message limit above the relay's
512 KiB audio frames (so the relay, not daphne, answers an oversized frame).
:class:`RelayClient` speaks the relay protocol over a real WebSocket with a
session cookie and an Origin, as a browser does, and records every event;
tests wait on them (:meth:`RelayClient.wait_event`), never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection, connect

from tests.live import STARTED, Live, daphne_server

#: daphne's frame and message limit for relay servers: above 512 KiB of base64 plus the JSON around it.
RELAY_MESSAGE_BYTES = 1024 * 1024
RATE = 24000
FRAME_SAMPLES = 960  # 40 ms, as the page sends


class RelayRefused(Exception):
    """The relay answered a request with an error; ``message`` is its text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@contextmanager
def relay_server(daphne, overrides: dict | None = None, *, name: str = "talk") -> Iterator[Live]:
    """A daphne on the test database (``daphne`` is the shared fixture's factory) serving the relay."""
    number = next(_numbers)
    prefix = f"mstalk{os.getpid()}n{number}"
    log = daphne.log_dir / f"talk-{number:02d}-{name}.log"
    server = daphne_server(
        database_url=daphne.database_url,
        redis_url=daphne.redis_url,
        prefix=prefix,
        overrides=overrides,
        log_path=log,
        max_message_size=RELAY_MESSAGE_BYTES,
    )
    with server as (port, proc):
        live = Live(port=port, redis_url=daphne.redis_url, prefix=prefix, database_url=daphne.database_url, log=log, proc=proc, name=name)
        STARTED.append(live)
        yield live


_numbers = itertools.count(1)


def session_cookie(username: str = "staff", *, is_staff: bool = True, is_active: bool = True) -> str:
    """A logged-in Django session cookie (``sessionid=...``) for a new user (sync code, committed database)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user(username, password="pw-not-used", is_staff=is_staff, is_active=True)
    client = Client()
    client.force_login(user)
    if not is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    return f"sessionid={client.cookies['sessionid'].value}"


async def asession_cookie(username: str, **kwargs: Any) -> str:
    """:func:`session_cookie` from async code (on a thread whose database connection is closed after)."""

    def make() -> str:
        from django.db import connections

        try:
            return session_cookie(username, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(make)


class RelayClient:
    """One relay WebSocket: requests with ids, every ``talk.event`` payload kept in :attr:`events`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._replies: dict[Any, asyncio.Future[dict]] = {}
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, live: Live, cookie: str | None, *, origin: str | None = "default") -> RelayClient:
        headers = {"Cookie": cookie} if cookie else {}
        ws = await connect(
            f"ws://127.0.0.1:{live.port}/talk/relay/",
            additional_headers=headers,
            origin=f"http://127.0.0.1:{live.port}" if origin == "default" else origin,
            max_size=None,
            open_timeout=10,
        )
        return cls(ws)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # --- requests --------------------------------------------------------------------------------

    async def call(self, method: str, params: dict | None = None, *, timeout: float = 10.0) -> dict:
        """The request's result; :class:`RelayRefused` for its error."""
        request_id = next(self._ids)
        reply = await self.send_raw(json.dumps({"id": request_id, "method": method, "params": params or {}}), request_id, timeout=timeout)
        if "error" in reply:
            raise RelayRefused(reply["error"]["message"])
        return reply["result"]

    async def send_raw(self, text: str | bytes, request_id: Any, *, timeout: float = 10.0) -> dict:
        """Send any frame; the reply with ``request_id`` (None for frames without a readable id)."""
        future = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        await self.ws.send(text)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._replies.pop(request_id, None)

    async def create(self, **params: Any) -> dict:
        return await self.call("create", params)

    async def send_pcm(self, session_id: str, pcm: bytes, *, frame_samples: int = FRAME_SAMPLES) -> None:
        """``pcm`` as the page sends it: 40 ms frames, each request answered before the next (no pacing)."""
        step = frame_samples * 2
        for start in range(0, len(pcm), step):
            await self.call("audio", {"relaySessionId": session_id, "audioBase64": base64.b64encode(pcm[start : start + step]).decode()})

    # --- events ----------------------------------------------------------------------------------

    def of(self, session_id: str, type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["relaySessionId"] == session_id and (type is None or e["type"] == type)]

    async def wait_event(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 10.0, after: int = 0) -> dict[str, Any]:
        """The first event (from index ``after``) that ``predicate`` accepts, waiting for it if needed."""
        async def found() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for event in self.events[after:]:
                        if predicate(event):
                            return event
                    if self.closed.is_set():
                        raise ConnectionError(f"the relay socket closed; events so far: {[e['type'] for e in self.events]}")
                    await self._changed.wait()

        return await asyncio.wait_for(found(), timeout)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("event") == "talk.event":
                    async with self._changed:
                        self.events.append(frame["payload"])
                        self._changed.notify_all()
                    continue
                future = self._replies.get(frame.get("id"))
                if future is not None and not future.done():
                    future.set_result(frame)
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()


def decoded_audio(events: list[dict[str, Any]]) -> np.ndarray:
    """The PCM16 samples of ``audio`` events, in order."""
    data = b"".join(base64.b64decode(e["audioBase64"]) for e in events if e["type"] == "audio")
    return np.frombuffer(data, dtype="<i2")


def silence_pcm(ms: int) -> bytes:
    return bytes(RATE * 2 * ms // 1000)


def speech_pcm(text: str, *, lead_ms: int = 300, tail_ms: int = 1500) -> tuple[bytes, int]:
    """``text`` spoken by Piper as PCM16 24 kHz with silence around it; (audio, ms where the speech ends)."""
    from tests.audio_fixtures import speech_wav

    with wave.open(str(speech_wav(text)), "rb") as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    speech = np.asarray(soxr.resample(samples, rate, RATE, quality="HQ"), dtype="<i2").tobytes()
    return silence_pcm(lead_ms) + speech + silence_pcm(tail_ms), lead_ms + len(speech) * 1000 // (RATE * 2)


def speech_wav_24k(text: str, path: os.PathLike, *, lead_ms: int = 1000, tail_ms: int = 30000) -> None:
    """``text`` as a 24 kHz mono WAV file with silence around it (a fake microphone for chromium)."""
    pcm, _ = speech_pcm(text, lead_ms=lead_ms, tail_ms=tail_ms)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)
