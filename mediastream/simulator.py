"""Twilio's side of a call, for trying the app without a Twilio account.

:class:`TwilioCall` posts the signed voice webhook (creating the call) and
reads the TwiML; :class:`TwilioStream` opens the media stream with a signed
upgrade and speaks the protocol the way Twilio does: ``connected``, ``start``,
20 ms mu-law ``media`` frames at real-time pace, ``stop``. Outbound audio is
"played" on a virtual playout clock, so marks are echoed when the audio before
them has played, and at once on ``clear`` (which drops the unplayed audio).

Used by ``manage.py simulate_call``, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .audio import FRAME_BYTES, SAMPLE_RATE

__all__ = ["TwilioCall", "TwilioStream", "StreamInstructions", "new_sid"]


def _configured_account() -> str:
    """The account the server expects (TWILIO_ACCOUNT_SID), when Django is configured."""
    try:
        from voicecall.conf import voicecall_settings

        return voicecall_settings.TWILIO_ACCOUNT_SID or ""
    except Exception:  # no settings: a standalone simulator run
        return ""


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class StreamInstructions:
    """What the voice TwiML told Twilio to do."""

    url: str
    parameters: dict[str, str]
    say: list[str]


def parse_twiml(xml: str) -> StreamInstructions:
    """What the voice webhook's TwiML asks for; ValueError if it is not TwiML that opens a stream."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"The voice webhook answered something that is not TwiML ({exc})") from None
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise ValueError("The voice webhook's TwiML has no <Connect><Stream>")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return StreamInstructions(url=stream.get("url", ""), parameters=params, say=[s.text or "" for s in root.iter("Say")])


def sign(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    return RequestValidator(auth_token).compute_signature(url, params or {})


@dataclass
class TwilioCall:
    """The HTTP half: the voice webhook and status callbacks, signed like Twilio signs them."""

    server_url: str  # where the server listens, e.g. http://127.0.0.1:8000
    public_url: str  # TWILIO_PUBLIC_BASE_URL: what Twilio signs
    auth_token: str
    call_sid: str = field(default_factory=lambda: new_sid("CA"))
    account_sid: str = field(default_factory=lambda: _configured_account() or new_sid("AC"))
    from_number: str = "+15005550006"
    to_number: str = "+14155551212"
    status_sequence: int = 0

    async def post(self, path: str, params: dict[str, str]) -> httpx.Response:
        signature = sign(self.auth_token, self.public_url.rstrip("/") + path, params)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                self.server_url.rstrip("/") + path, data=params, headers={"X-Twilio-Signature": signature}
            )

    def base_params(self, status: str) -> dict[str, str]:
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.from_number,
            "To": self.to_number,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    async def answer(self) -> StreamInstructions:
        """Post the voice webhook as for a ringing inbound call; return the stream it asks for."""
        response = await self.post("/twilio/voice/", self.base_params("ringing"))
        response.raise_for_status()
        return parse_twiml(response.text)

    async def status(self, status: str, **extra: str) -> httpx.Response:
        params = {**self.base_params(status), "SequenceNumber": str(self.status_sequence), **extra}
        self.status_sequence += 1
        return await self.post("/twilio/status/", params)


class TwilioStream:
    """The WebSocket half: one media stream, as Twilio's media server runs it."""

    def __init__(
        self,
        connect_url: str,
        *,
        auth_token: str,
        signed_url: str | None = None,
        call_sid: str,
        account_sid: str = "",
        stream_sid: str | None = None,
        parameters: dict[str, str] | None = None,
        echo_marks: bool = True,
        extra_headers: dict[str, str] | None = None,
        sign_upgrade: bool = True,
    ) -> None:
        self.connect_url = connect_url
        self.signed_url = signed_url or connect_url
        self.auth_token = auth_token
        self.call_sid = call_sid
        self.account_sid = account_sid or new_sid("AC")
        self.stream_sid = stream_sid or new_sid("MZ")
        self.parameters = parameters or {}
        self.echo_marks = echo_marks
        self.extra_headers = extra_headers or {}
        self.sign_upgrade = sign_upgrade
        self.ws: ClientConnection | None = None
        self.sequence = 0
        self.chunk = 0
        self.media_timestamp = 0
        # What the server sent, in order, and per kind.
        self.received: list[dict] = []
        self.media_frames: list[bytes] = []
        self.marks_received: list[str] = []
        self.marks_echoed: list[str] = []
        self.clears = 0
        self.on_message: Callable[[dict, float], None] | None = None
        self._played: list[tuple[float, bytes]] = []  # (play start time, audio)
        self._playout_end = 0.0
        self._pending_marks: dict[str, asyncio.TimerHandle] = {}
        self._reader: asyncio.Task | None = None
        self._events: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.Event()

    # --- connection ---------------------------------------------------------

    async def connect(self, open_timeout: float = 10) -> None:
        headers = dict(self.extra_headers)
        if self.sign_upgrade:
            headers["X-Twilio-Signature"] = sign(self.auth_token, self.signed_url)
        self.ws = await connect(
            self.connect_url, additional_headers=headers, open_timeout=open_timeout, max_size=2**22, compression=None
        )
        self._reader = asyncio.create_task(self._read(), name=f"sim-reader:{self.stream_sid}")

    async def start(self, *, connected: bool = True) -> None:
        """Send ``connected`` then ``start`` (with the TwiML's parameters)."""
        if connected:
            await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.sequence += 1
        await self.send_json(
            {
                "event": "start",
                "sequenceNumber": str(self.sequence),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": self.parameters,
                },
                "streamSid": self.stream_sid,
            }
        )

    async def send_json(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def send_media(self, mulaw: bytes) -> None:
        self.sequence += 1
        self.chunk += 1
        message = (
            '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
            '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
            % (self.sequence, self.chunk, self.media_timestamp, base64.b64encode(mulaw).decode(), self.stream_sid)
        )
        self.media_timestamp += len(mulaw) * 1000 // SAMPLE_RATE
        await self.ws.send(message)

    async def stream_audio(self, mulaw: bytes, *, realtime: bool = True, on_frame: Callable[[int, float], None] | None = None) -> None:
        """Send audio as 20 ms frames, paced to an absolute clock when ``realtime``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(0, len(mulaw), FRAME_BYTES):
            frame = mulaw[index : index + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
            if realtime:
                due = start + (index // FRAME_BYTES) * 0.02
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if on_frame is not None:
                on_frame(index // FRAME_BYTES, time.perf_counter())
            await self.send_media(frame)

    async def send_dtmf(self, digit: str) -> None:
        self.sequence += 1
        await self.send_json(
            {"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": str(self.sequence), "dtmf": {"track": "inbound_track", "digit": digit}}
        )

    async def stop(self) -> None:
        self.sequence += 1
        await self.send_json(
            {
                "event": "stop",
                "sequenceNumber": str(self.sequence),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    async def close(self) -> None:
        for handle in self._pending_marks.values():
            handle.cancel()
        self._pending_marks.clear()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    @property
    def close_code(self) -> int | None:
        if self.ws is None or self.ws.close_code is None:
            return None
        return self.ws.close_code

    async def wait_closed(self, timeout: float = 10) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    # --- what the server sends ------------------------------------------------

    async def next_event(self, kind: str | None = None, timeout: float = 10) -> dict:
        """The next message from the server (optionally of one ``event`` kind)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await asyncio.wait_for(self._events.get(), max(0.001, deadline - loop.time()))
            if message is None:
                raise ConnectionError(f"stream closed (code {self.close_code})")
            if kind is None or message.get("event") == kind:
                return message

    @property
    def agent_audio(self) -> bytes:
        """The outbound audio that was played (cleared audio excluded)."""
        return b"".join(audio for _, audio in self._played)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for raw in self.ws:
                now = loop.time()
                message = json.loads(raw)
                self.received.append(message)
                if self.on_message is not None:
                    self.on_message(message, time.perf_counter())
                event = message.get("event")
                if event == "media":
                    audio = base64.b64decode(message["media"]["payload"])
                    self.media_frames.append(audio)
                    start = max(now, self._playout_end)
                    self._playout_end = start + len(audio) / SAMPLE_RATE
                    self._played.append((start, audio))
                elif event == "mark":
                    name = message["mark"]["name"]
                    self.marks_received.append(name)
                    if self.echo_marks:
                        delay = max(0.0, self._playout_end - now)
                        self._pending_marks[name] = loop.call_later(delay, self._echo_mark, name)
                elif event == "clear":
                    self.clears += 1
                    self._clear(now)
                self._events.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            self._events.put_nowait(None)
            self.closed.set()

    def _clear(self, now: float) -> None:
        # Drop audio that has not played yet, then echo every pending mark at once.
        kept: list[tuple[float, bytes]] = []
        for start, audio in self._played:
            if start >= now:
                continue
            played = int((now - start) * SAMPLE_RATE)
            kept.append((start, audio[:played] if played < len(audio) else audio))
        self._played = kept
        self._playout_end = now
        for name, handle in list(self._pending_marks.items()):
            handle.cancel()
            self._echo_mark(name)

    def _echo_mark(self, name: str) -> None:
        self._pending_marks.pop(name, None)
        if self.ws is None or self.ws.close_code is not None:
            return
        self.sequence += 1
        self.marks_echoed.append(name)
        message = json.dumps({"event": "mark", "sequenceNumber": str(self.sequence), "streamSid": self.stream_sid, "mark": {"name": name}})
        asyncio.ensure_future(self._safe_send(message))

    async def _safe_send(self, message: str) -> None:
        try:
            await self.ws.send(message)
        except ConnectionClosed:
            pass


def stream_urls(public_base_url: str, server_url: str, stream_url: str) -> tuple[str, str]:
    """(URL to connect to, URL Twilio signs): the TwiML's wss URL, re-pointed at the local server."""
    parts = urlsplit(stream_url)
    server = urlsplit(server_url)
    scheme = "wss" if server.scheme == "https" else "ws"
    return f"{scheme}://{server.netloc}{parts.path}", stream_url
