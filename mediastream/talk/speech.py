"""A speech agent (the Realtime API) as a voice: it hears the browser and speaks itself.

An agent that takes ``audio_format="pcm16"`` (:class:`~mediastream.agents.openai_realtime.RealtimeAgent`)
gets the browser's PCM16 24 kHz as it is and answers in it; any other speech
agent speaks 8 kHz mu-law, and the audio is resampled both ways. Create's
``instructions``, ``voice`` and ``model`` apply through the agent's
``with_options`` when it has one.

The model's own VAD takes turns. When it hears the user start speaking over
audio the browser is still playing, the response is cancelled, the model's
item is cut to what the browser played of it (estimated by the
:class:`~.voice.Playhead`), and the browser is told to ``clear``; the same
happens on the client's ``cancel``. Each spoken response ends with a
``mark`` named after the model's item. Tools run here (client tools in the
browser) and their output goes back to the model; ``end_call`` ends the
session after the goodbye.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from voicecall.logsafe import sanitize

from ..agents.base import (
    AgentError,
    AudioDelta,
    BaseSpeechAgent,
    CallContext,
    CallerSpeechStarted,
    ResponseDone,
    SpeechError,
    ToolCallRequest,
    Transcript,
)
from .pcm import ToMulaw, ToPcm24, seconds
from .protocol import CreateParams
from .voice import Playhead, Voice, VoiceOutput

__all__ = ["SpeechVoice"]

logger = logging.getLogger(__name__)


class _Item:
    """One spoken response item: when its audio started reaching the browser, and how much was sent."""

    __slots__ = ("first_at", "sent_seconds")

    def __init__(self, first_at: float) -> None:
        self.first_at = first_at
        self.sent_seconds = 0.0

    def heard_ms(self, now: float) -> int:
        return int(min(self.sent_seconds, now - self.first_at) * 1000)


class SpeechVoice(Voice):
    provider = "realtime"

    def __init__(self, agent: BaseSpeechAgent, *, session_id: str, output: VoiceOutput, options: CreateParams) -> None:
        chosen = {"instructions": options.instructions, "voice": options.voice, "model": options.model}
        chosen = {key: value for key, value in chosen.items() if value is not None}
        if chosen and hasattr(agent, "with_options"):
            agent = agent.with_options(**chosen)
            self.applied = {key: value for key, value in chosen.items() if key != "instructions"}
        else:
            self.applied = {}
        self.agent = agent
        self.session_id = session_id
        self.output = output
        self.native = "pcm16" in getattr(agent, "audio_formats", ())
        self.toolbox = agent.toolbox(client_runner=output.client_tool)
        extra: dict[str, Any] = {"audio_format": "pcm16"} if self.native else {}
        self.session = agent.open_session(
            call=CallContext(session_id), tools=list(self.toolbox.tools.values()), history=[], **extra
        )
        self.playhead = Playhead()
        self._to_mulaw = ToMulaw()
        self._to_pcm = ToPcm24()
        self._items: dict[str, _Item] = {}
        self._current = ""  # the item whose audio is playing
        self._turns = 0
        self._ending = False
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- Voice ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.session.connect()

    def start(self) -> None:
        self._spawn(self._read(), "read")

    def send_audio(self, pcm: bytes) -> None:
        if self._closed:
            return
        audio = pcm if self.native else self._to_mulaw.feed(pcm)
        if audio:
            self.session.send_audio(audio)

    async def cancel(self) -> None:
        await self._interrupt()

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.session.close()

    # --- what the model does ------------------------------------------------------------------------

    async def _read(self) -> None:
        async for item in self.session.events():
            kind = type(item)
            if kind is AudioDelta:
                self._audio(item)
            elif kind is Transcript:
                self.output.transcript(item.role, item.text, item.final)
            elif kind is CallerSpeechStarted:
                if self.playhead.playing():
                    await self._interrupt()
                    self.output.clear()
            elif kind is ToolCallRequest:
                self._spawn(self._run_tool(item), "tool")
            elif kind is ResponseDone:
                self._response_done(item)
            elif kind is SpeechError:
                logger.warning("Relay session %s: speech agent error: %s", self.session_id, sanitize(item.message, 200))
                self.output.error(item.message)
                if item.fatal:
                    self.output.finished("error")
                    return

    def _audio(self, delta: AudioDelta) -> None:
        pcm = delta.mulaw if self.native else self._to_pcm.feed_mulaw(delta.mulaw)
        if delta.item_id not in self._items:
            self._items[delta.item_id] = _Item(time.monotonic() + self.playhead.remaining())
        self._current = delta.item_id
        self._send(delta.item_id, pcm)

    def _send(self, item_id: str, pcm: bytes) -> None:
        if not pcm:
            return
        self._items[item_id].sent_seconds += seconds(pcm)
        self.playhead.sent(seconds(pcm))
        self.output.audio(pcm)

    def _response_done(self, done: ResponseDone) -> None:
        if done.item_id in self._items:
            if not self.native:
                self._send(done.item_id, self._to_pcm.flush())
            self.output.mark(done.item_id)
        if self._ending and done.item_id:
            self._ending = False
            self._spawn(self._finish_after_playback(), "finish")

    async def _interrupt(self) -> None:
        """Cancel the response and cut the model's item to what the browser played of it."""
        item = self._items.get(self._current)
        item_id, self._current = self._current, ""
        heard = item.heard_ms(time.monotonic()) if item is not None else None
        self.playhead.reset()
        if not self.native:
            self._to_pcm.flush()
        try:
            await self.session.cancel_response()
            if item_id and heard is not None and item is not None and heard < item.sent_seconds * 1000:
                await self.session.truncate(item_id, heard)
        except AgentError as exc:
            self.output.error(sanitize(str(exc), 300))

    async def _run_tool(self, request: ToolCallRequest) -> None:
        self._turns += 1
        result = await self.toolbox.run(request.call, CallContext(self.session_id, "", self._turns))
        if result.ends_call:
            self._ending = True
        try:
            await self.session.send_tool_result(request.call.id, result.output)
        except AgentError as exc:
            self.output.error(sanitize(str(exc), 300))

    async def _finish_after_playback(self) -> None:
        await asyncio.sleep(self.playhead.remaining())  # the goodbye plays out first
        self.output.finished("completed")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"talk-relay-speech-{name}:{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Relay session %s: %s failed", self.session_id, task.get_name(), exc_info=task.exception())
