"""Relay sessions: one browser's conversation with a voice, and the requests that drive it.

:class:`RelayConnection` answers one WebSocket's requests; each ``create``
opens a :class:`RelaySession` in the process-wide :data:`sessions` table
(limits: :mod:`.limits`). A session turns what its voice does into
``talk.event`` frames for its own connection only, runs client tools through
the browser, and ends exactly once: on ``stop`` (reason "completed"), at its
expiry ("completed"), when its voice fails ("error") or its connection goes.
Nothing here blocks: the voice connects in the background and says ``ready``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from voicecall.logsafe import sanitize

from ..agents.base import CallContext, ToolCall
from . import pcm as pcm_format
from .clienttools import ClientTools
from .limits import SessionTable, TalkSettings, talk_settings, unknown_session
from .protocol import (
    AudioParams,
    CancelParams,
    CreateParams,
    Request,
    StopParams,
    ToolResultParams,
    event,
    parse_params,
)
from .voice import Voice, open_voice

__all__ = ["RelayConnection", "RelaySession", "sessions"]

logger = logging.getLogger(__name__)

CloseReason = Literal["completed", "error"]
#: Seconds a closing voice may take to release its vendor connection and models.
VOICE_CLOSE_TIMEOUT = 5.0


class RelaySession:
    """One relay session; it is also its voice's :class:`~.voice.VoiceOutput`."""

    def __init__(
        self,
        *,
        connection_id: str,
        send: Callable[[dict[str, Any]], None],
        limits: TalkSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.connection_id = connection_id
        self.expires_at = clock() + limits.session_ttl_seconds
        self.expires_at_ms = int((time.time() + limits.session_ttl_seconds) * 1000)
        self.closed = False
        self.voice: Voice | None = None
        self._send = send
        self._tools = ClientTools(self._announce_tool_call)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiry = asyncio.get_running_loop().call_later(
            limits.session_ttl_seconds, lambda: self._spawn(self.close("completed"), "expire")
        )

    # --- starting ---------------------------------------------------------------------------------

    def start(self, options: CreateParams) -> dict[str, Any]:
        """Build the voice (raises :class:`RelayError`), connect it in the background; create's result."""
        self.voice = open_voice(options, session_id=self.id, output=self)
        self._spawn(self._connect(), "connect")
        return {
            "relaySessionId": self.id,
            "provider": self.voice.provider,
            "transport": "gateway-relay",
            "audio": {
                "inputEncoding": "pcm16",
                "inputSampleRateHz": pcm_format.RATE,
                "outputEncoding": "pcm16",
                "outputSampleRateHz": pcm_format.RATE,
            },
            **self.voice.applied,
            "expiresAt": self.expires_at_ms,
        }

    async def _connect(self) -> None:
        assert self.voice is not None
        try:
            await self.voice.connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = sanitize(f"The relay's voice could not connect: {exc}", 300)
            logger.warning("Relay session %s: %s", self.id, message)
            self.error(message)
            await self.close("error")
            return
        if not self.closed:
            self._emit("ready")
            self.voice.start()

    # --- requests ---------------------------------------------------------------------------------

    def send_audio(self, pcm: bytes) -> None:
        if self.voice is not None and pcm:
            self.voice.send_audio(pcm)
        self._emit("inputAudio", byteLength=len(pcm))

    def tool_result(self, params: ToolResultParams) -> None:
        self._tools.submit(params.call_id, params.result, will_continue=params.will_continue)
        self._emit("toolResult", callId=params.call_id)

    async def cancel(self, reason: str) -> None:
        logger.debug("Relay session %s: turn cancelled (%s)", self.id, sanitize(reason, 80))
        if self.voice is not None:
            await self.voice.cancel()
        self._emit("clear")

    async def close(self, reason: CloseReason, *, notify: bool = True) -> None:
        """End the session once: the owner hears ``close`` (unless its socket is gone), the voice is released."""
        if self.closed:
            return
        self.closed = True
        sessions.discard(self)
        self._expiry.cancel()
        self._tools.cancel_all()
        if notify:
            self._send(event(self.id, "close", reason=reason))
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.voice is not None:
            try:
                await asyncio.wait_for(self.voice.close(), VOICE_CLOSE_TIMEOUT)
            except Exception:
                logger.warning("Relay session %s: its voice did not close cleanly", self.id, exc_info=True)

    # --- VoiceOutput: what the voice does ----------------------------------------------------------

    def audio(self, pcm: bytes) -> None:
        self._emit("audio", audioBase64=base64.b64encode(pcm).decode("ascii"))

    def clear(self) -> None:
        self._emit("clear")

    def mark(self, name: str) -> None:
        self._emit("mark", markName=name)

    def transcript(self, role: Literal["user", "assistant"], text: str, final: bool) -> None:
        self._emit("transcript", role=role, text=text, final=final)

    def error(self, message: str) -> None:
        self._emit("error", message=message)

    def finished(self, reason: CloseReason) -> None:
        self._spawn(self.close(reason), "finish")

    async def client_tool(self, call: ToolCall, context: CallContext) -> Any:
        return await self._tools.run(call, context)

    # --- internals ----------------------------------------------------------------------------------

    def _announce_tool_call(self, item_id: str, call: ToolCall) -> None:
        self._emit("toolCall", itemId=item_id, callId=call.id, name=call.name, args=call.arguments)

    def _emit(self, type: str, **fields: Any) -> None:
        if not self.closed:
            self._send(event(self.id, type, **fields))

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"talk-relay-{name}:{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Relay session %s: %s failed", self.id, task.get_name(), exc_info=task.exception())


#: Every open relay session of this process.
sessions: SessionTable[RelaySession] = SessionTable()


class RelayConnection:
    """One WebSocket's side of the relay: its requests answered, its sessions closed with it."""

    def __init__(self, send: Callable[[dict[str, Any]], None], *, clock: Callable[[], float] = time.monotonic) -> None:
        """``send`` puts a frame on this connection's socket, in order, without blocking."""
        self.id = uuid.uuid4().hex
        self._send = send
        self._clock = clock

    async def handle(self, request: Request) -> dict[str, Any]:
        """The result of ``request``; raises :class:`RelayError` with what the client reads."""
        limits = talk_settings()
        params = parse_params(request, max_audio_base64=limits.max_audio_base64_bytes)
        if isinstance(params, CreateParams):
            return await self._create(params, limits)
        session = await self._session(params.relay_session_id)
        if isinstance(params, AudioParams):
            session.send_audio(params.pcm)
        elif isinstance(params, ToolResultParams):
            session.tool_result(params)
        elif isinstance(params, CancelParams):
            await session.cancel(params.reason)
        elif isinstance(params, StopParams):
            await session.close("completed")
        return {"ok": True}

    async def close(self) -> None:
        """The socket is gone: close its sessions without telling it."""
        for session in sessions.owned_by(self.id):
            await session.close("completed", notify=False)

    async def _create(self, params: CreateParams, limits: TalkSettings) -> dict[str, Any]:
        for expired in sessions.expired(self._clock()):
            await expired.close("completed")
        sessions.admit(self.id, limits)
        session = RelaySession(connection_id=self.id, send=self._send, limits=limits, clock=self._clock)
        sessions.add(session)
        try:
            return session.start(params)
        except BaseException:
            await session.close("error", notify=False)
            raise

    async def _session(self, session_id: str) -> RelaySession:
        session, expired = sessions.lookup(session_id, self.id, self._clock())
        if expired is not None:
            await expired.close("completed")
        if session is None:
            raise unknown_session()
        return session
