"""The conversation engine for speech agents (speech-to-speech, e.g. the OpenAI Realtime API).

A speech agent hears the caller's audio and speaks itself: this runner sends
it every inbound frame, turns each of its responses into a streamed playback
item (mu-law chunks straight to the player: no TTS, no resampling on a phone
call), runs the tools it asks for, and passes its transcripts on. Barge-in is
the stream session's decision, as for any agent; when the caller cuts a
response off, the runner cancels it and truncates the model's memory of it to
what the caller actually heard (the player knows from Twilio's marks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from voicecall.logsafe import sanitize

from ..events import StreamEvent
from ..playback.player import PlaybackItem
from ..speech_in import BackendSpeechStarted, Final, Partial
from .base import (
    AudioDelta,
    BaseSpeechAgent,
    BaseSpeechSession,
    CallContext,
    CallerSpeechStarted,
    ChatMessage,
    ResponseDone,
    SpeechError,
    ToolCallRequest,
    Transcript,
)
from .tools import ToolBox

__all__ = ["SpeechConversationRunner"]

logger = logging.getLogger(__name__)


class SpeechConversationRunner:
    def __init__(
        self,
        agent: BaseSpeechAgent,
        *,
        call: CallContext,
        history: list[ChatMessage],
        toolbox: ToolBox,
        session: Any,
        perform: Callable[[list], None],
        hear: Callable[[Any], None],
    ) -> None:
        """``hear`` takes what the model heard of the caller (speech starts, transcripts) like speech in's events."""
        self.agent = agent
        self._hear = hear
        self.call = call
        self.toolbox = toolbox
        self._session = session
        self._perform = perform
        self._speech: BaseSpeechSession = agent.open_session(call=call, tools=list(toolbox.tools.values()), history=history)
        self._connected = False
        self._items: dict[str, tuple[int, PlaybackItem]] = {}  # model item id -> (turn id, playback item)
        self._turns: dict[int, str] = {}  # turn id -> model item id
        self._next_turn = 0
        self._tasks: set[asyncio.Task] = set()
        self._run_task = asyncio.create_task(self._run(), name=f"speech-agent:{call.stream_sid}")

    # --- what the stream gives it ---------------------------------------------------

    def feed_audio(self, mulaw: bytes) -> None:
        if self._connected:
            self._speech.send_audio(mulaw)

    def start_reply(self, turn_id: int, text: str = "", dtmf: str = "", resume: bool = False) -> None:
        """Speech agents take their own turns (server VAD); the session does not start them."""

    def cancel(self, turn_id: int) -> None:
        """The caller talks over the response: stop it (what was heard is truncated when it is known)."""
        item_id = self._turns.get(turn_id)
        if item_id is not None:
            self._end_item(item_id)
        self._spawn(self._speech.cancel_response(), "cancel")

    def heard(self, text: str, *, turn_id: int | None = None, audio_ms: int | None = None, interrupted: bool = False) -> None:
        """What the caller heard of a response: the model's item is cut to it."""
        if interrupted and turn_id is not None and audio_ms is not None:
            item_id = self._turns.get(turn_id)
            if item_id:
                self._spawn(self._speech.truncate(item_id, audio_ms), "truncate")

    async def close(self) -> None:
        self._run_task.cancel()
        tasks = [self._run_task, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item_id in list(self._items):
            self._end_item(item_id)
        try:
            await asyncio.wait_for(self._speech.close(), 5.0)
        except Exception:
            logger.warning("Call %s: the speech agent's session did not close cleanly", self.call.call_sid, exc_info=True)

    # --- what the model does -----------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._speech.connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("Call %s: the speech agent could not connect: %s", self.call.call_sid, sanitize(str(exc), 200))
            self._perform(self._session.speech_agent_failed(f"{type(exc).__name__}: {exc}"))
            return
        self._connected = True
        async for event in self._speech.events():
            kind = type(event)
            if kind is AudioDelta:
                self._audio(event)
            elif kind is Transcript:
                self._transcript(event)
            elif kind is CallerSpeechStarted:
                self._hear(BackendSpeechStarted(event.audio_start_ms))
            elif kind is ToolCallRequest:
                self._spawn(self._run_tool(event), "tool")
            elif kind is ResponseDone:
                self._end_item(event.item_id)
            elif kind is SpeechError:
                logger.warning("Call %s: speech agent error: %s", self.call.call_sid, sanitize(event.message, 200))
                if event.fatal:
                    self._connected = False
                    self._perform(self._session.speech_agent_failed(event.message))
                    return

    def _audio(self, event: AudioDelta) -> None:
        entry = self._items.get(event.item_id)
        if entry is None:
            self._next_turn += 1
            item = PlaybackItem(stream=asyncio.Queue(), turn_id=self._next_turn)
            self._items[event.item_id] = (self._next_turn, item)
            self._turns[self._next_turn] = event.item_id
            item.stream.put_nowait(event.mulaw)
            self._perform(self._session.speech_reply(item))
            return
        entry[1].stream.put_nowait(event.mulaw)

    def _transcript(self, event: Transcript) -> None:
        if event.role == "user":
            self._hear(Final(event.text) if event.final else Partial(event.text))
            return
        entry = self._items.get(event.item_id)
        if entry is not None and event.final:
            entry[1].text = event.text  # the record of what the agent said

    async def _run_tool(self, request: ToolCallRequest) -> None:
        turn_id = self._next_turn
        call = request.call
        self._perform(
            self._session.agent_progress(
                turn_id, StreamEvent.AGENT_TOOL_CALLED, {"call_id": call.id, "name": call.name, "arguments": call.arguments}
            )
        )
        result = await self.toolbox.run(call, CallContext(self.call.call_sid, self.call.stream_sid, turn_id))
        self._perform(
            self._session.agent_progress(
                turn_id,
                StreamEvent.AGENT_TOOL_RESULT,
                {"call_id": call.id, "name": call.name, "ok": result.ok, "output": result.output, "error": result.error},
            )
        )
        if result.ends_call:
            self._perform(self._session.reply_done(turn_id, text="", spoke=True, end_call=True))
        await self._speech.send_tool_result(call.id, result.output)

    def _end_item(self, item_id: str) -> None:
        entry = self._items.pop(item_id, None)
        if entry is not None:
            entry[1].stream.put_nowait(None)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=f"speech-agent-{name}:{self.call.stream_sid}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Call %s: speech agent task failed: %s", self.call.call_sid, task.exception())
