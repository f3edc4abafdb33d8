"""The conversation engine's I/O half: runs a text agent's replies for one call.

The stream session decides when a caller turn starts, which reply may play
and when one is fenced off (:class:`~mediastream.session.StartReply`,
:class:`~mediastream.session.CancelReply`). This runner does what those take:
it streams the agent's reply, cuts it into sentences as it arrives (the first
is synthesized and playing while the model writes the rest), runs the tools
the model asks for and feeds their results back, and keeps the conversation
history. What happens is reported to the session, which announces it.

A cancelled turn's task is cancelled and its reply stream closed: the player
gets no more text for it, and the session never lets a stale reply start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from voicecall.logsafe import sanitize

from ..events import StreamEvent
from ..playback.player import PlaybackItem
from ..playback.textsplit import SentenceStream
from .base import AgentError, BaseAgent, CallContext, ChatMessage, TextDelta, ToolCallRequest
from .tools import ToolBox

__all__ = ["ConversationRunner", "MAX_TOOL_ROUNDS"]

logger = logging.getLogger(__name__)

#: Model calls per turn at most (each tool round is one more): a model looping on tools stops here.
MAX_TOOL_ROUNDS = 6


class ConversationRunner:
    def __init__(
        self,
        agent: BaseAgent,
        *,
        call: CallContext,
        history: list[ChatMessage],
        toolbox: ToolBox,
        session: Any,
        perform: Callable[[list], None],
    ) -> None:
        self.agent = agent
        self.call = call
        self.history = history
        self.toolbox = toolbox
        self._session = session
        self._perform = perform
        self._tasks: dict[int, asyncio.Task] = {}
        self._streams: dict[int, asyncio.Queue] = {}

    # --- what the session says -----------------------------------------------------

    def start_reply(self, turn_id: int, text: str = "", dtmf: str = "", resume: bool = False) -> None:
        if not resume:
            self.history.append(ChatMessage("user", text, dtmf=dtmf))
        task = asyncio.create_task(self._reply(turn_id), name=f"agent-reply:{self.call.stream_sid}:{turn_id}")
        self._tasks[turn_id] = task
        task.add_done_callback(lambda _task, turn_id=turn_id: self._tasks.pop(turn_id, None))

    def cancel(self, turn_id: int) -> None:
        task = self._tasks.pop(turn_id, None)
        if task is not None:
            task.cancel()
        self._end_stream(turn_id)

    def feed_audio(self, mulaw: bytes) -> None:
        """A text agent hears the caller through the stream's transcription, not its audio."""

    def heard(self, text: str, **details: Any) -> None:
        """What the caller heard of a reply (or the greeting) joins the history."""
        if text:
            self.history.append(ChatMessage("assistant", text))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for turn_id in list(self._streams):
            self._end_stream(turn_id)

    # --- one reply -------------------------------------------------------------------

    async def _reply(self, turn_id: int) -> None:
        started = time.monotonic()
        call = CallContext(self.call.call_sid, self.call.stream_sid, turn_id)
        sentences = SentenceStream()
        said: list[str] = []
        end_call = False
        first_token = True
        try:
            for _round in range(MAX_TOOL_ROUNDS):
                requests: list[ToolCallRequest] = []
                async with contextlib.aclosing(self.agent.reply(self.history, tools=list(self.toolbox.tools.values()), call=call)) as reply:
                    async for event in reply:
                        if type(event) is TextDelta:
                            if first_token and event.text.strip():
                                first_token = False
                                self._report("agent_progress", turn_id, StreamEvent.AGENT_FIRST_TOKEN, {})
                            for sentence in sentences.feed(event.text):
                                self._say(turn_id, sentence, said)
                        elif type(event) is ToolCallRequest:
                            requests.append(event)
                for sentence in sentences.flush():
                    self._say(turn_id, sentence, said)
                if not requests:
                    break
                end_call = await self._run_tools(turn_id, call, requests) or end_call
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            logger.warning("Call %s turn %d: the agent failed: %s", call.call_sid, turn_id, sanitize(str(exc), 200))
            self._end_stream(turn_id)
            self._report("reply_failed", turn_id, str(exc))
            return
        except Exception as exc:  # a bug in an agent backend must not end the call
            logger.exception("Call %s turn %d: agent reply crashed", call.call_sid, turn_id)
            self._end_stream(turn_id)
            self._report("reply_failed", turn_id, f"{type(exc).__name__}: {exc}")
            return
        spoke = turn_id in self._streams
        self._end_stream(turn_id)
        logger.debug("Call %s turn %d written in %.0f ms", call.call_sid, turn_id, (time.monotonic() - started) * 1000)
        self._report_done(turn_id, " ".join(said), spoke, end_call)

    def _say(self, turn_id: int, sentence: str, said: list[str]) -> None:
        said.append(sentence)
        stream = self._streams.get(turn_id)
        if stream is not None:
            stream.put_nowait(sentence)
            return
        stream = asyncio.Queue()
        stream.put_nowait(sentence)
        self._streams[turn_id] = stream
        item = PlaybackItem(stream=stream, turn_id=turn_id)
        self._report("reply_ready", turn_id, item)

    async def _run_tools(self, turn_id: int, call: CallContext, requests: list[ToolCallRequest]) -> bool:
        """Run what the model asked for, in order; True if one of them ended the call."""
        self.history.append(ChatMessage("assistant", tool_calls=tuple(request.call for request in requests)))
        end_call = False
        for request in requests:
            tool_call = request.call
            self._report(
                "agent_progress",
                turn_id,
                StreamEvent.AGENT_TOOL_CALLED,
                {"call_id": tool_call.id, "name": tool_call.name, "arguments": tool_call.arguments},
            )
            result = await self.toolbox.run(tool_call, call)
            self._report(
                "agent_progress",
                turn_id,
                StreamEvent.AGENT_TOOL_RESULT,
                {
                    "call_id": tool_call.id,
                    "name": tool_call.name,
                    "ok": result.ok,
                    "output": result.output,
                    "error": result.error,
                    "tool_ms": result.duration_ms,
                },
            )
            self.history.append(ChatMessage("tool", result.output, tool_call_id=tool_call.id, name=tool_call.name))
            end_call = end_call or result.ends_call
        return end_call

    def _end_stream(self, turn_id: int) -> None:
        stream = self._streams.pop(turn_id, None)
        if stream is not None:
            stream.put_nowait(None)

    def _report(self, method: str, *args: Any) -> None:
        self._perform(getattr(self._session, method)(*args))

    def _report_done(self, turn_id: int, text: str, spoke: bool, end_call: bool) -> None:
        self._perform(self._session.reply_done(turn_id, text=text, spoke=spoke, end_call=end_call))
