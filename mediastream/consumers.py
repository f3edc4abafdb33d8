"""The Twilio Media Streams consumer: a thin state machine over the parts that do the work.

    AWAITING_START --start accepted--> STREAMING --stop/close--> STOPPED

* ``protocol`` parses frames and builds outbound messages;
* ``admission`` caps open and pending sockets and resolves the client IP;
* ``records`` checks the call and token and writes the stream row;
* ``speech_in`` feeds audio to the local VAD and the transcription session;
* ``speech_out`` owns speech out for the stream (``playback.player`` queues and paces it);
* ``announcer`` delivers events (rows, signals, channel-layer broadcasts) in order.

The per-frame path (``media``) never awaits the database or the network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from enum import Enum
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.consumer import get_handler_name

from voicecall.logsafe import sanitize
from voicecall.twilio_auth import validate_websocket_upgrade
from voicecall.twiml import STREAM_TOKEN_PARAMETER

from . import db, heartbeat
from .admission import Admission, registry, resolve_client_ip
from .announcer import Announcer
from .closing import CLOSES, Close, CloseCode
from .conf import app_settings
from .dispatch import dispatch_loop
from .groups import call_group
from .startup import on_first_connection
from .protocol import Connected, Dtmf, Mark, Media, RemoteProtocolError, Start, Stop, parse_message
from .speech_in import SpeechIn
from .speech_out import SpeechOut, no_stream_reply
from .stats import StreamStats
from .transcription import get_transcription_backend

__all__ = ["MediaStreamConsumer"]

logger = logging.getLogger(__name__)

#: How long teardown waits for the answers owed to callers waiting on speak().
REPLY_TIMEOUT = 2.0


class State(Enum):
    AWAITING_START = "awaiting_start"
    STARTING = "starting"
    STREAMING = "streaming"
    STOPPED = "stopped"


class MediaStreamConsumer(AsyncWebsocketConsumer):
    """One Twilio Media Stream (one call) per socket."""

    # --- ASGI plumbing ---------------------------------------------------------

    async def __call__(self, scope, receive, send):
        # AsyncConsumer.__call__, with two changes: a cheaper receive loop (see
        # mediastream.dispatch), and teardown in a finally, because disconnect()
        # does not run when a handler crashes or daphne cancels the app (shutdown).
        self._init_state()
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            sources.append(functools.partial(self.channel_layer.receive, self.channel_name))
        try:
            await dispatch_loop(sources, self.dispatch)
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            await self._teardown(CLOSES.SHUTDOWN.code, CLOSES.SHUTDOWN.reason)
            raise
        except Exception:
            logger.exception("Media stream consumer crashed (stream %s)", self.stream_sid or "-")
            await self._teardown(CLOSES.INTERNAL_ERROR.code, "consumer crashed")
            raise
        finally:
            await self._teardown(CloseCode.NORMAL, "socket closed")

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels hops to a thread before every handler to close stale DB
        # connections; at 50 frames/s that hop dominates. ORM access goes
        # through database_sync_to_async, which does that cleanup itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def _init_state(self) -> None:
        self.conn_id = uuid.uuid4().hex
        self.state = State.AWAITING_START
        self.client_ip = "unknown"
        self.call_sid = ""
        self.stream_sid = ""
        self.admitted: db.Admitted | None = None
        self.speech_out: SpeechOut | None = None
        self.speech: SpeechIn | None = None
        self.announcer: Announcer | None = None
        self.stats = StreamStats(max_warnings=app_settings.MAX_PROTOCOL_WARNINGS_PER_STREAM)
        self._tasks: set[asyncio.Task] = set()
        self._replies: set[asyncio.Task] = set()  # answers to waiting speak() callers: never cancelled
        self._start_timer: asyncio.TimerHandle | None = None
        self._closing: Close | None = None
        self._socket_gone = False
        self._teardown_task: asyncio.Task | None = None
        self._max_message = app_settings.MAX_MESSAGE_BYTES

    # --- connection ------------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        on_first_connection()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope.get("headers", [])}
        client = self.scope.get("client") or [None]
        self.client_ip = resolve_client_ip(client[0], headers.get("x-forwarded-for"), app_settings.TRUSTED_PROXIES)
        check = validate_websocket_upgrade(self.scope["path"], self.scope.get("query_string", b""), headers)
        if not check.ok:
            logger.warning("Refused media stream handshake from %s: %s", self.client_ip, sanitize(check.reason))
            await self.close()  # before accept: daphne answers 403
            return
        if registry.open_connection(self.conn_id, app_settings.MAX_CONNECTIONS) is not Admission.OK:
            logger.warning(
                "Refused media stream handshake from %s: %d connections open (MAX_CONNECTIONS)",
                self.client_ip,
                registry.open_count,
            )
            await self.close()
            return
        await self.accept()
        admission = registry.add_pending(
            self.conn_id,
            self.client_ip,
            app_settings.MAX_PENDING_CONNECTIONS,
            app_settings.MAX_PENDING_CONNECTIONS_PER_IP,
        )
        if admission is not Admission.OK:
            await self._close_with(CLOSES.TOO_MANY_PENDING)
            return
        loop = asyncio.get_running_loop()
        self._start_timer = loop.call_later(app_settings.PRE_START_TIMEOUT, self._on_start_timeout)

    def _on_start_timeout(self) -> None:
        if self.state is State.AWAITING_START:
            self._close_soon(CLOSES.START_TIMEOUT)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        code = message.get("code")
        if self._closing is not None:
            await self._teardown(self._closing.code, self._closing.reason)
        else:
            await self._teardown(code, "socket closed" if self.state is not State.STOPPED else "stream stopped")
        raise StopConsumer()

    # --- inbound frames --------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > self._max_message:
                await self._close_with(CLOSES.MESSAGE_TOO_BIG)
                return
            text = data  # parsed (and most likely refused) below, like any frame
        elif len(text) > self._max_message or (
            len(text) * 4 > self._max_message and len(text.encode("utf-8")) > self._max_message
        ):
            await self._close_with(CLOSES.MESSAGE_TOO_BIG)
            return
        try:
            msg = parse_message(text)
        except RemoteProtocolError as exc:
            if self.stats.protocol_error(exc.kind):
                logger.warning(
                    "Media stream %s from %s: %s (%s)",
                    self.stream_sid or "(no start yet)",
                    self.client_ip,
                    sanitize(str(exc)),
                    exc.kind,
                )
            return
        if type(msg) is Media:
            self._on_media(msg)
        elif type(msg) is Start:
            await self._on_start(msg)
        elif type(msg) is Mark:
            self.stats.sequence(msg.sequence_number)
            self._on_mark(msg)
        elif type(msg) is Dtmf:
            self.stats.sequence(msg.sequence_number)
            self._on_dtmf(msg)
        elif type(msg) is Stop:
            self.stats.sequence(msg.sequence_number)
            await self._on_stop(msg)
        elif type(msg) is Connected:
            self.stats.connected = True

    def _on_media(self, msg: Media) -> None:
        if self.state is not State.STREAMING:
            self.stats.media_before_start += 1
            return
        self.stats.media(msg)
        self.speech.feed(msg.payload)

    async def _on_start(self, msg: Start) -> None:
        if self._closing is not None:  # e.g. the start timeout fired first
            return
        if self.state is not State.AWAITING_START:
            await self._close_with(CLOSES.DUPLICATE_START)
            return
        self.state = State.STARTING
        self.stream_sid = msg.stream_sid
        if not msg.call_sid:
            await self._reject_start(CLOSES.MISSING_CALL_SID, msg)
            return
        self.call_sid = msg.call_sid
        params = dict(msg.custom_parameters)
        token = params.pop(STREAM_TOKEN_PARAMETER, None)
        admission = asyncio.ensure_future(
            database_sync_to_async(db.admit_stream)(
                call_sid=msg.call_sid,
                stream_sid=msg.stream_sid,
                token=token,
                tracks=list(msg.tracks),
                media_format=msg.media_format,
                custom_parameters=params,
                stale_after=app_settings.STALE_STREAM_SECONDS,
            )
        )
        try:
            outcome = await asyncio.shield(admission)
        except asyncio.CancelledError:
            # Shutting down mid-admission: let it finish so teardown can close the row it wrote.
            outcome = await admission
            if isinstance(outcome, db.Admitted):
                self.admitted = outcome
            raise
        if isinstance(outcome, Close):
            await self._reject_start(outcome, msg)
            return
        self.admitted = outcome  # from here on, teardown closes the row
        if self._closing is not None:  # closed (timeout) while the database answered
            return
        # Join the command group before anyone hears about the stream, so a
        # speak() sent in reaction to stream_started cannot miss it.
        await self.channel_layer.group_add(call_group(self.call_sid), self.channel_name)
        self._admit(outcome, msg)

    async def _reject_start(self, close: Close, msg: Start) -> None:
        logger.warning(
            "Rejected media stream start from %s (call %s, stream %s): %s",
            self.client_ip,
            sanitize(msg.call_sid or "-", 40),
            sanitize(msg.stream_sid or "-", 40),
            close.reason,
        )
        await self._close_with(close)

    def _admit(self, admitted: db.Admitted, msg: Start) -> None:
        self.admitted = admitted
        self.state = State.STREAMING
        registry.promote(self.conn_id)
        if self._start_timer is not None:
            self._start_timer.cancel()
        self.announcer = Announcer(
            sender=type(self),
            call_sid=admitted.call_sid,
            stream_sid=admitted.stream_sid,
            call_id=admitted.call_id,
            stream_id=admitted.stream_id,
            channel_layer=self.channel_layer,
        )
        self.announcer.start()
        self.speech_out = SpeechOut(
            admitted=admitted,
            send=self._send_text,
            announce=self.announcer.announce,
            reply=self._reply,
            on_backpressure=lambda: self._close_soon(CLOSES.BACKPRESSURE),
        )
        self.speech = SpeechIn(
            call_sid=admitted.call_sid,
            stream_sid=admitted.stream_sid,
            backend=get_transcription_backend(),
            announce=self.announcer.announce,
            on_speech_started=self._on_speech_started,
            call_id=admitted.call_id,
            stream_id=admitted.stream_id,
        )
        self.speech.start()
        self.announcer.announce(
            "stream.started",
            {"tracks": list(msg.tracks), "custom_parameters": {k: v for k, v in msg.custom_parameters.items() if k != STREAM_TOKEN_PARAMETER}},
            record=False,
        )
        heartbeat.beat(admitted.stream_id)
        if app_settings.STREAM_GREETING:
            self.speech_out.greet(app_settings.STREAM_GREETING)

    def _on_mark(self, msg: Mark) -> None:
        self.stats.marks += 1
        if self.speech_out is not None:
            self.speech_out.on_mark(msg.name)

    def _on_dtmf(self, msg: Dtmf) -> None:
        if self.state is not State.STREAMING:
            return
        self.stats.dtmf += 1
        self.announcer.announce("dtmf", {"digit": msg.digit})

    async def _on_stop(self, msg: Stop) -> None:
        if self.state is State.STREAMING:
            self.state = State.STOPPED
            await self._close_with(CLOSES.STOPPED)

    # --- speech in and out -------------------------------------------------------

    def _on_speech_started(self, offset_ms: int | None, source: str) -> None:
        if self.speech_out is not None and self.speech_out.is_barge_in():
            self._spawn(self.speech_out.interrupt("barge-in"), "barge-in")

    # Channel-layer commands from mediastream.api: the socket holds the call.

    async def playback_say(self, message: dict[str, Any]) -> None:
        if self.speech_out is None or self.state is not State.STREAMING:
            self._reply(message.get("reply_to"), no_stream_reply(message))
            return
        self.speech_out.say(message)

    async def playback_interrupt(self, message: dict[str, Any]) -> None:
        if self.speech_out is None or self.state is not State.STREAMING:
            self._reply(message.get("reply_to"), {"type": "playback.interrupted", "count": 0, "live": False})
            return
        count = await self.speech_out.interrupt(message.get("reason") or "interrupted")
        self._reply(message.get("reply_to"), {"type": "playback.interrupted", "count": count, "live": True})

    # --- outbound --------------------------------------------------------------

    async def _send_text(self, text: str) -> None:
        if self._closing is not None or self._socket_gone:  # nothing more goes out
            return
        try:
            await self.send(text_data=text)
        except Exception as exc:
            # Twilio hung up and the server noticed before this consumer did; the
            # disconnect that follows tears the stream down (what was playing
            # resolves as interrupted, not failed).
            self._socket_gone = True
            logger.info("Media stream %s: send after the socket closed (%s)", self.stream_sid, type(exc).__name__)

    def _reply(self, channel: str | None, message: dict[str, Any]) -> None:
        if channel:
            self._replies.add(self._spawn(self.channel_layer.send(channel, message), "reply"))

    # --- closing and teardown --------------------------------------------------

    def _begin_close(self, close: Close) -> bool:
        """Mark the stream as closing, once; from then on nothing more is sent."""
        if self._closing is not None:
            return False
        self._closing = close
        log = logger.info if close.code == CloseCode.NORMAL else logger.warning
        log(
            "Closing media stream %s from %s: %d %s",
            sanitize(self.stream_sid, 40) or "(no start)",
            self.client_ip,
            close.code,
            close.reason,
        )
        return True

    async def _close_with(self, close: Close) -> None:
        if self._begin_close(close):
            await self.close(code=int(close.code), reason=close.reason)

    def _close_soon(self, close: Close) -> None:
        """Close from a timer or the send path, without awaiting."""
        if self._begin_close(close):
            self._spawn(self.close(code=int(close.code), reason=close.reason), "close")

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{name}:{self.stream_sid or self.conn_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._replies.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Task %s failed", task.get_name(), exc_info=task.exception())

    async def _teardown(self, code: int | None, reason: str) -> None:
        """Release everything exactly once, whatever ended the stream.

        The work runs in its own task and callers wait on it shielded: daphne
        cancels the app at shutdown, and that must not cut a teardown short.
        """
        if self._teardown_task is None:
            self._teardown_task = asyncio.ensure_future(self._release(code, reason))
        await asyncio.shield(self._teardown_task)

    async def _release(self, code: int | None, reason: str) -> None:
        self.state = State.STOPPED
        if self._start_timer is not None:
            self._start_timer.cancel()
        registry.release(self.conn_id)
        if self.speech_out is not None:
            await self.speech_out.close()
        if self.speech is not None:
            await self.speech.close()
        # Callers of speak(wait=True) hear "interrupted" rather than time out.
        pending = {task for task in self._replies if not task.done()}
        if pending:
            await asyncio.wait(pending, timeout=REPLY_TIMEOUT)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.admitted is not None:
            heartbeat.forget(self.admitted.stream_id)
            try:
                await self.channel_layer.group_discard(call_group(self.call_sid), self.channel_name)
            except Exception:
                logger.exception("group_discard failed for %s", self.stream_sid)
            await self._record_stop(code, reason)
        self.stats.log_summary(self.stream_sid)

    async def _record_stop(self, code: int | None, reason: str) -> None:
        # Rows the stream still owes (playback outcomes, transcripts) land before
        # the row that says it stopped: after that, nothing more is written.
        if self.announcer is not None:
            await self.announcer.flush()
        try:
            await database_sync_to_async(db.finish_stream)(
                self.admitted.stream_id, close_code=code, close_reason=reason, stats=self.stats.as_dict()
            )
        except Exception:
            logger.exception("Could not record the end of stream %s", self.stream_sid)
        if self.announcer is not None:  # once: teardown runs once per stream
            self.announcer.announce("stream.stopped", {"close_code": code, "close_reason": reason}, record=False)
        if self.announcer is not None:
            await self.announcer.close()
