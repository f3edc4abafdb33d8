"""The console's WebSocket: a staff member follows one call and acts on it.

Refused before accept (daphne answers 403) unless the session's user may
watch calls (:mod:`.access`). On accept it joins the call's events group,
then sends a snapshot of the call's records: joining first means no event
falls between the snapshot and the live events, and the few that would be
sent twice are dropped (:mod:`.overlap`). A reconnecting browser gets a fresh
snapshot, so it catches up from the event log. While open it polls the call's
record (status, streams) and the rows no stream broadcasts (:mod:`.records`).
Requests (:mod:`.wire`) run as tasks of their own, so a "say" that waits for
its outcome never holds up the events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model
from django.utils import timezone

from voicecall.logsafe import sanitize

from ..groups import events_group
from ..throttled import ThrottledLog
from .access import may_act, may_watch
from .actions import ActionFailed, perform
from .conf import console_settings
from .overlap import SnapshotOverlap
from .records import POLL_LOOKBACK, epoch_ms, load_snapshot, poll_records
from .wire import BadRequest, Request, event_message, parse_request, reply_error, reply_ok

__all__ = ["CallConsole", "CLOSE_UNKNOWN_CALL"]

logger = logging.getLogger(__name__)

#: Close code for a console opened on a CallSid with no record (after an error message saying so).
CLOSE_UNKNOWN_CALL = 4404

_refused = ThrottledLog(logger, "%(count)d more console sockets refused in the last %(seconds).0fs")
_bad_requests = ThrottledLog(logger, "%(count)d more bad console requests in the last %(seconds).0fs")
_poll_failed = ThrottledLog(logger, "%(count)d more console polls failed in the last %(seconds).0fs")

NOT_ALLOWED_TO_ACT = "You may watch this call but not act on it: that needs the voicecall.change_call permission."


def _user_may_act(user_pk: Any) -> bool:
    """Asked again for each action, from a fresh user row: a revoked permission counts at once."""
    user = get_user_model()._default_manager.filter(pk=user_pk).first()
    return user is not None and may_act(user)


class CallConsole(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.call_sid = str(self.scope["url_route"]["kwargs"]["call_sid"])
        self.poll_task: asyncio.Task | None = None
        self.actions: set[asyncio.Task] = set()
        self.overlap: SnapshotOverlap | None = None
        user = self.scope.get("user")
        watch, act = await database_sync_to_async(lambda: (may_watch(user), may_act(user)))()
        if not watch:
            client = self.scope.get("client") or ("-", 0)
            who = getattr(user, "get_username", lambda: "anonymous")() or "anonymous"
            _refused.warning(
                "Refused a console socket for %s from %s (%s): not staff with voicecall.view_call",
                sanitize(self.call_sid, 40), sanitize(client[0], 45), sanitize(who, 60),
            )
            await self.close()
            return
        self.user_pk, self.username, self.can_act = user.pk, user.get_username(), act
        self.settings = console_settings()
        self.group = events_group(self.call_sid)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await database_sync_to_async(load_snapshot)(self.call_sid, self.settings.catch_up_events)
        await self.accept()
        if snapshot is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self._send({"type": "error", "error": "There is no call with this CallSid."})
            await self.close(CLOSE_UNKNOWN_CALL)
            return
        self.call_id = snapshot.call_id
        self.overlap = SnapshotOverlap(snapshot.events, snapshot_ms=epoch_ms(snapshot.taken_at))
        self.seen_rows = {event["id"]: time.monotonic() for event in snapshot.events}
        await self._send(
            {
                "type": "snapshot",
                "call": snapshot.call,
                "events": snapshot.events,
                "can_act": self.can_act,
                "server_time": int(time.time() * 1000),
            }
        )
        self.poll_task = asyncio.create_task(self._poll(snapshot.call, snapshot.taken_at), name=f"console:{self.call_sid}")

    async def disconnect(self, code: int) -> None:
        tasks = [task for task in (self.poll_task, *self.actions) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    # --- live events --------------------------------------------------------------------

    async def mediastream_event(self, message: dict[str, Any]) -> None:
        """A stream event on the call's events group (``mediastream.messages.EventMessage``)."""
        if self.overlap is None:
            return
        event = {
            "id": None,
            "event": str(message.get("event") or ""),
            "stream_sid": str(message.get("stream_sid") or ""),
            "data": message.get("data") if isinstance(message.get("data"), dict) else {},
            "at": int(time.time() * 1000),
        }
        if not self.overlap.repeats(event):
            await self._send(event_message(event))

    async def _poll(self, call: dict[str, Any], since) -> None:
        last_call = call
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            started = timezone.now()
            try:
                call, rows = await database_sync_to_async(poll_records)(
                    self.call_id, since, self.settings.catch_up_events
                )
            except Exception as exc:  # the database is away: try again next time
                _poll_failed.warning("Console for %s could not read the call's records: %s", self.call_sid, sanitize(exc))
                continue
            since = started
            if call is None:
                await self._send({"type": "error", "error": "This call's record was deleted."})
                await self.close(CLOSE_UNKNOWN_CALL)
                return
            if call != last_call:
                last_call = call
                await self._send({"type": "call", "call": call})
            now = time.monotonic()
            for row in rows:
                if row["id"] not in self.seen_rows:
                    self.seen_rows[row["id"]] = now
                    await self._send(event_message(row))
            horizon = now - 2 * POLL_LOOKBACK.total_seconds()
            self.seen_rows = {row_id: at for row_id, at in self.seen_rows.items() if at >= horizon}

    # --- requests ------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._bad(BadRequest("Send JSON text frames, not binary ones"))
            return
        size = len(text_data.encode("utf-8", "surrogatepass"))
        if size > self.settings.max_message_bytes:
            await self._bad(BadRequest(f"Message of {size} bytes is too large (at most {self.settings.max_message_bytes})"))
            return
        try:
            request = parse_request(text_data)
        except BadRequest as exc:
            await self._bad(exc)
            return
        if not self.can_act or not await database_sync_to_async(_user_may_act)(self.user_pk):
            await self._send(reply_error(request.id, NOT_ALLOWED_TO_ACT))
            return
        if len(self.actions) >= self.settings.max_actions:
            await self._send(reply_error(request.id, "Too many actions in progress: wait for one to finish."))
            return
        task = asyncio.create_task(self._act(request), name=f"console:{request.action}:{self.call_sid}")
        self.actions.add(task)
        task.add_done_callback(self.actions.discard)

    async def _act(self, request: Request) -> None:
        try:
            result = await perform(request, self.call_sid, self.settings, self.username)
        except ActionFailed as exc:
            await self._send(reply_error(request.id, str(exc)))
        except Exception:
            logger.exception("Console: %s on %s failed", request.action, sanitize(self.call_sid, 40))
            await self._send(reply_error(request.id, "The action failed on the server; its log says why."))
        else:
            await self._send(reply_ok(request.id, result))

    async def _bad(self, exc: BadRequest) -> None:
        _bad_requests.warning("Console for %s: bad request from %s: %s", self.call_sid, sanitize(self.username, 60), exc)
        await self._send(reply_error(exc.request_id, str(exc)))

    async def _send(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message, default=str, ensure_ascii=False))
