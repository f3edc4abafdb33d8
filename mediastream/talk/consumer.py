"""The talk relay's WebSocket (I/O only): staff users in, JSON frames to and from :class:`~.relay.RelayConnection`.

:data:`talk_relay_application` is the route's application: Channels'
``AllowedHostsOriginValidator`` (a browser page of another site cannot use a
staff user's cookies here) around ``AuthMiddlewareStack`` (the Django
session cookie) around :class:`TalkRelayConsumer`, so the router needs no
middleware of its own. Anonymous and non-staff users (and foreign origins)
are refused before accept: daphne answers the handshake with 403.

Frames go out through one queue per socket, so every event and reply keeps
the order in which the relay produced it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator

from voicecall.logsafe import sanitize

from ..throttled import ThrottledLog
from .protocol import RelayError, error, parse_request, result
from .relay import RelayConnection

__all__ = ["TalkRelayConsumer", "talk_relay_application"]

logger = logging.getLogger(__name__)

_refused = ThrottledLog(logger, "%(count)d more talk relay WebSockets refused in the last %(seconds).0fs")
_bad_requests = ThrottledLog(logger, "%(count)d more talk relay requests refused in the last %(seconds).0fs")


def is_relay_user(user: Any) -> bool:
    """Who may talk through the relay: active staff users (those the admin lets in)."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


class TalkRelayConsumer(AsyncWebsocketConsumer):
    # No channel layer: a relay socket talks only to its own sessions, in this
    # process, so it needs no channel of its own (and keeps working while Redis is away).
    channel_layer_alias = None
    connection: RelayConnection | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not is_relay_user(user):
            client = (self.scope.get("client") or ("-", 0))[0]
            _refused.warning(
                "Refused a talk relay WebSocket from %s: %s",
                sanitize(str(client), 64),
                "not signed in" if user is None or not user.is_authenticated else "not an active staff user",
            )
            await self.close()
            return
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name="talk-relay-writer")
        self.connection = RelayConnection(self._outbox.put_nowait)
        await self.accept()
        logger.info("Talk relay connection %s opened by %s", self.connection.id, sanitize(user.get_username(), 150))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.connection is None:
            return
        if text_data is None:
            self._outbox.put_nowait(error(None, "Relay frames are JSON text, not binary"))
            return
        request_id = None
        try:
            request = parse_request(text_data)
            request_id = request.id
            reply = result(request.id, await self.connection.handle(request))
        except RelayError as exc:
            reply = error(exc.request_id if exc.request_id is not None else request_id, exc.message)
            _bad_requests.warning(
                "Talk relay connection %s: refused a request: %s", self.connection.id, sanitize(exc.message, 200)
            )
        except Exception:  # a bug or a broken setting: this request fails, the socket and its sessions go on
            logger.exception("Talk relay connection %s: a request failed", self.connection.id)
            reply = error(request_id, "The relay failed on this request; the server log says why")
        self._outbox.put_nowait(reply)

    async def disconnect(self, code: int) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        self._writer.cancel()  # the socket is gone: what is still queued has nowhere to go
        await connection.close()
        logger.info("Talk relay connection %s closed (%s)", connection.id, code)

    async def _write(self) -> None:
        while (frame := await self._outbox.get()) is not None:
            await self.send(text_data=json.dumps(frame, separators=(",", ":"), ensure_ascii=False))


talk_relay_application = AllowedHostsOriginValidator(AuthMiddlewareStack(TalkRelayConsumer.as_asgi()))
