"""Helpers for media stream tests: calls with tokens, signed upgrades, Twilio messages.

In-process streams go through :func:`communicator` / :func:`live_stream`;
calls to a real daphne (``tests.live.Live``) through :func:`open_call`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from twilio.request_validator import RequestValidator

from mediastream.simulator import TwilioCall, TwilioStream, new_sid
from voicecall.models import Call, CallStatus, MediaStream
from voicecall.tokens import mint_stream_token

if TYPE_CHECKING:
    from .live import Live

STREAM_PATH = "/twilio/media-stream/"
#: The public origin the test settings give Twilio (what webhooks and upgrades are signed for).
PUBLIC = "https://voice.example.com"


def auth_token() -> str:
    return settings.TWILIO_AUTH_TOKEN


def signed_url(path: str = STREAM_PATH) -> str:
    return "wss://voice.example.com" + path


def signature(url: str | None = None) -> str:
    return RequestValidator(auth_token()).compute_signature(url or signed_url(), {})


def make_call_sync(status: str = CallStatus.RINGING, **fields) -> tuple[Call, str]:
    token, token_hash = mint_stream_token()
    call = Call.objects.create(
        call_sid=new_sid("CA"), account_sid=new_sid("AC"), status=status, direction="inbound", stream_token_hash=token_hash, **fields
    )
    return call, token


make_call = database_sync_to_async(make_call_sync)


def start(call_sid: str, stream_sid: str, token: str | None, **params: str) -> str:
    custom = dict(params)
    if token is not None:
        custom["token"] = token
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC" + "1" * 32,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": custom,
            },
            "streamSid": stream_sid,
        }
    )


def media(stream_sid: str, payload: bytes = b"\xff" * 160, seq: int = 2, chunk: int = 1, timestamp: int = 0) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp), "payload": base64.b64encode(payload).decode()},
            "streamSid": stream_sid,
        }
    )


def mark(stream_sid: str, name: str, seq: int = 3) -> str:
    return json.dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": name}})


def stop(call_sid: str, stream_sid: str, seq: int = 9) -> str:
    return json.dumps({"event": "stop", "sequenceNumber": str(seq), "stop": {"accountSid": "AC", "callSid": call_sid}, "streamSid": stream_sid})


def communicator(*, signed: bool = True, client: str = "203.0.113.7", headers: list | None = None, path: str = STREAM_PATH):
    from settings.asgi import application

    all_headers = list(headers or [])
    if signed:
        all_headers.append((b"x-twilio-signature", signature(signed_url(path)).encode()))
    comm = WebsocketCommunicator(application, path, headers=all_headers)
    comm.scope["client"] = [client, 40000]
    return comm


async def receive_close(comm: WebsocketCommunicator, timeout: float = 3) -> dict:
    """Skip outbound frames until the consumer closes the socket; return the close event."""
    while True:
        output = await comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output


@asynccontextmanager
async def live_stream(call_fields: dict | None = None, **kwargs):
    """An accepted stream for a fresh call (with ``call_fields`` on its row): yields (communicator, call, stream_sid)."""
    call, token = await make_call(**(call_fields or {}))
    comm = communicator(**kwargs)
    connected, _ = await comm.connect()
    assert connected
    stream_sid = new_sid("MZ")
    await comm.send_to(text_data=start(call.call_sid, stream_sid, token))
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream_sid).exists())
    await reachable(call.call_sid)
    try:
        yield comm, call, stream_sid
    finally:
        await comm.disconnect()


async def reachable(call_sid: str, timeout: float = 5.0) -> str:
    """Wait until ``speak()`` can find the call's consumer (its directory entry comes just after the stream row)."""
    import asyncio

    from channels.layers import get_channel_layer

    from mediastream.directory import for_layer

    directory = for_layer(get_channel_layer())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (channel := await directory.lookup(call_sid)) is None:
        if loop.time() > deadline:
            raise AssertionError(f"call {call_sid} not in the stream directory within {timeout}s")
        await asyncio.sleep(0.005)
    return channel


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01):
    """Poll a (sync, ORM-using) predicate until it is truthy; fail after ``timeout``."""
    import asyncio

    check = database_sync_to_async(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def open_call(
    live: Live, *, on_message: Callable[[dict, float], None] | None = None, timeout: float = 5.0, **stream_kwargs
) -> tuple[TwilioCall, TwilioStream]:
    """Answer a call through a live server's signed voice webhook and open its media stream.

    Returns once the server has recorded the stream. ``on_message`` sees every
    message the server sends from the first one (a greeting starts as soon as
    the stream is admitted); ``stream_kwargs`` go to :class:`TwilioStream`.
    """
    call = TwilioCall(server_url=live.http, public_url=PUBLIC, auth_token=auth_token())
    instructions = await call.answer()
    assert instructions.url == "wss://voice.example.com/twilio/media-stream/"
    stream = TwilioStream(
        live.ws,
        signed_url=instructions.url,
        auth_token=call.auth_token,
        call_sid=call.call_sid,
        parameters=instructions.parameters,
        **stream_kwargs,
    )
    stream.on_message = on_message
    await stream.connect()
    await stream.start()
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid).exists(), timeout=timeout)
    return call, stream


async def hang_up(stream: TwilioStream, timeout: float = 15.0) -> MediaStream:
    """Close the socket; wait until the server recorded the end (every row the stream owed is written by then)."""
    await stream.close()
    return await wait_for(
        lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid, stopped_at__isnull=False).first(), timeout=timeout
    )
