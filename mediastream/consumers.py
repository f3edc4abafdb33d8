"""The Twilio Media Streams consumer: I/O only.

:class:`~mediastream.session.StreamSession` makes every decision. The consumer
reports what happens (socket, channel layer, database, player, speech in,
timer) and performs the actions returned: sends, closes, database and
channel-layer calls, tasks. The per-frame path never awaits the database or the network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from . import db, gate
from . import session as s
from .admission import registry
from .dbgate import UNAVAILABLE, database
from .daphne_frames import deliver_directly
from .dispatch import DispatchLoop
from .layer import LayerLink
from .parts import StreamParts, record_end
from .startup import on_first_connection
from .tasks import StreamTasks

__all__ = ["MediaStreamConsumer"]

logger = logging.getLogger(__name__)

#: How long teardown waits for the answers owed to callers waiting on speak().
REPLY_TIMEOUT = 2.0


class MediaStreamConsumer(AsyncWebsocketConsumer):
    """One Twilio Media Stream (one call) per socket."""

    async def __call__(self, scope, receive, send):
        # AsyncConsumer.__call__ with a cheaper receive loop (mediastream.dispatch) to
        # which daphne's frame reader hands frames directly when it can, and teardown
        # in a finally: disconnect() does not run when a handler crashes or daphne
        # cancels the app at shutdown.
        self.scope, self.base_send = scope, send
        self.session = s.StreamSession(uuid.uuid4().hex, registry, s.SessionConfig.from_settings())
        self.parts: StreamParts | None = None
        self.tasks = StreamTasks(lambda: self.session.stream_sid or self.session.conn_id)
        self._timers: dict[s.Timer, asyncio.TimerHandle] = {}
        self._teardown_task: asyncio.Task | None = None
        self._handlers = {
            s.Accept: lambda a: self.accept(),
            s.Refuse: lambda a: self.close(),  # before accept: daphne answers 403
            s.StartTimer: self._start_timer,
            s.CancelTimer: self._cancel_timer,
            s.CloseSocket: lambda a: self.close(code=int(a.close.code), reason=a.close.reason),
            s.AdmitStream: self._admit,
            s.RegisterStream: lambda a: self.link.register(a.call_sid),  # reachable before announced
            s.OpenStream: self._open,
            s.Announce: lambda a: self.parts.announce(a),
            s.FeedAudio: lambda a: self.parts.feed(a.mulaw),
            s.Play: lambda a: self.parts.play(a.item),
            s.InterruptPlayback: lambda a: self.parts.interrupt(a.reason, a.reply_to),
            s.DeliverMark: lambda a: self.parts.player.on_mark(a.name),
            s.StartReply: lambda a: self.parts.start_reply(a.turn_id, a.text, a.dtmf, a.resume),
            s.CancelReply: lambda a: self.parts.cancel_reply(a.turn_id),
            s.ReplyHeard: lambda a: self.parts.heard(a),
            s.CheckEndOfTurn: lambda a: self.parts.check_end_of_turn(a),
            s.Reply: lambda a: self.tasks.spawn(self.channel_layer.send(a.channel, a.message.to_message()), "reply", reply=True),
            s.Teardown: self._teardown,
        }
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.link = LayerLink(self.channel_layer, self.channel_name, self.tasks.label)
        loop = DispatchLoop(self.dispatch, self.receive_now)
        undo_direct = deliver_directly(receive, loop.offer)
        try:
            await loop.run([receive, self.link.receive])
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            await self._do(self.session.shutdown())
            raise
        except Exception:
            logger.exception("Media stream consumer crashed (stream %s)", self.session.stream_sid or "-")
            await self._do(self.session.crashed())
            raise
        finally:
            undo_direct()
            await self._do(self.session.ended())

    async def dispatch(self, message: dict) -> None:
        # Channels hops to a thread before every handler to close stale DB
        # connections; at 50 frames/s that hop dominates. ORM access goes
        # through database_sync_to_async, which does that cleanup itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- what happens, reported to the session ------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        on_first_connection()
        actions = self.session.connect(self.scope, evict=lambda: self._soon(self.session.evicted()))
        await self._do(await gate.screen(self.session, actions, self._soon))

    async def websocket_receive(self, message: dict) -> None:
        await self._do(self.session.receive(message.get("text"), message.get("bytes")))

    def receive_now(self, text: str) -> Awaitable[None] | None:
        """websocket_receive for a text frame daphne hands over directly: what must await is returned."""
        self.session.stats.frames_direct += 1
        actions = self.session.receive(text)
        if len(actions) == 1 and type(actions[0]) is s.FeedAudio:  # a media frame: 50 a second
            return self.parts.feed(actions[0].mulaw)  # the FeedAudio handler's call, without the loop
        return self._perform_now(actions)

    async def websocket_disconnect(self, message: dict) -> None:
        await self._do(self.session.disconnected(message.get("code")))
        raise StopConsumer()

    async def playback_say(self, message: dict) -> None:
        """A channel-layer command from mediastream.api (so is ``playback.interrupt``)."""
        await self._do(self.session.command(message))

    playback_interrupt = playback_say

    # --- performing the session's actions -------------------------------------------

    async def _do(self, actions: list[s.Action]) -> None:
        rest = self._perform_now(actions)
        if rest is not None:
            await rest

    def _perform_now(self, actions: list[s.Action]) -> Awaitable[None] | None:
        """Perform actions in order until one must await: that one and the rest are returned to await."""
        handlers = self._handlers
        for index, action in enumerate(actions):
            pending = handlers[type(action)](action)
            if pending is not None and asyncio.iscoroutine(pending):
                return self._finish(pending, actions[index + 1 :])
        return None

    async def _finish(self, pending: Awaitable[None], rest: list[s.Action]) -> None:
        await pending
        await self._do(rest)

    def _soon(self, actions: list[s.Action]) -> None:
        """Perform from a callback or timer: what would await runs as a task."""
        for action in actions:
            pending = self._handlers[type(action)](action)
            if asyncio.iscoroutine(pending):
                self.tasks.spawn(pending, type(action).__name__)

    def _cancel_timer(self, a: s.CancelTimer) -> None:
        timer = self._timers.pop(a.purpose, None)
        if timer is not None:
            timer.cancel()

    def _start_timer(self, a: s.StartTimer) -> None:
        fired = lambda: self._soon(self.session.timer_fired(a.purpose, self.parts and self.parts.player))  # noqa: E731
        self._cancel_timer(s.CancelTimer(a.purpose))
        self._timers[a.purpose] = asyncio.get_running_loop().call_later(a.seconds, fired)

    async def _admit(self, a: s.AdmitStream) -> None:
        admission = asyncio.ensure_future(database.run(db.admit_stream, **dataclasses.asdict(a)))
        try:
            outcome = await asyncio.shield(admission)
        except asyncio.CancelledError:
            # Shutting down mid-admission: let it finish so teardown can close the row it wrote.
            self.session.admission_interrupted(await admission)
            raise
        except UNAVAILABLE as exc:  # the database is away: 4013, not a crash
            return await self._do(self.session.admission_failed(exc))
        await self._do(self.session.admission_done(outcome))

    async def _open(self, a: s.OpenStream) -> None:
        self.parts = await StreamParts.open(
            a.admitted,
            session=self.session,
            perform=self._soon,
            send=lambda text: self.send(text_data=text),
            sender=type(self),
            channel_layer=self.channel_layer,
            vad_enabled=a.vad_enabled,
        )
        parts = self.parts
        opened = self.session.stream_opened(
            finals_expected=parts.speech.finals_expected,
            agent=parts.conversation is not None,
            agent_greeting=parts.agent_greeting,
            speech_agent=parts.speech_agent,
        )
        await self._do(opened)

    # --- teardown ------------------------------------------------------------------

    async def _teardown(self, a: s.Teardown) -> None:
        """Release everything exactly once, whatever ended the stream; shielded from shutdown's cancel."""
        self._teardown_task = self._teardown_task or asyncio.ensure_future(self._release(a.code, a.reason))
        await asyncio.shield(self._teardown_task)

    async def _release(self, code: int | None, reason: str) -> None:
        self.session.teardown()
        gate.release(self.session.conn_id)
        for timer in self._timers.values():
            timer.cancel()
        if self.parts is not None:
            await self.parts.close()  # what the player and speech in still owe is reported first
        await self.tasks.finish(REPLY_TIMEOUT)
        admitted = self.session.admitted
        await self.link.leave()
        if admitted is not None:
            last = self.session.stopped(code, reason)
            await record_end(admitted, self.parts, code=code, reason=reason, stats=self.session.stats.as_dict(), last=last)
        self.session.stats.log_summary(self.session.stream_sid)
