"""The running parts of one admitted stream, built together, driven by the session, closed together.

An admitted stream has an announcer (event rows, signals, the events group), a
player (speech out), speech in (VAD and transcription) and, when an agent
holds the call, a conversation runner. The consumer builds them when the
session says ``OpenStream``, hands them the session's actions, and closes them
at teardown. What they report goes back to the session through ``perform``:
the parts never call each other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import BaseChannelLayer
from django.db import DatabaseError

from . import heartbeat, vad
from .agents.base import BaseAgent, BaseSpeechAgent, CallContext
from .announcer import Announcer
from .backends import backends
from .conf import app_settings
from .db import Admitted
from .dbgate import database
from .metrics.meter import StreamMeter
from .playback.player import PlaybackItem, PlayerConfig, StreamPlayer
from .rows import StreamRows, finish_row
from .session import Action, Announce, CheckEndOfTurn, ReplyHeard, StreamSession
from .speech_in import SpeechIn
from .transcription.discard import DiscardBackend

__all__ = ["StreamParts", "record_end"]

logger = logging.getLogger(__name__)


@dataclass
class StreamParts:
    announcer: Announcer
    player: StreamPlayer
    speech: SpeechIn
    session: StreamSession
    perform: Callable[[list[Action]], None]
    send: Callable[[str], Awaitable[None]]
    #: The agent's runner: agents.engine.ConversationRunner or agents.speech_engine.SpeechConversationRunner.
    conversation: Any = None
    agent_greeting: str = ""
    speech_agent: bool = False
    #: Caller audio in: speech in's feed, plus the speech agent's when one holds the call.
    feed: Callable[[bytes], None] = field(default=None, repr=False)  # type: ignore[assignment]
    #: The caller's recent audio for the end-of-turn model (only when one is configured).
    turn_audio: Any = field(default=None, repr=False)
    #: The stream's share of the Prometheus metrics (mediastream.metrics).
    meter: StreamMeter | None = field(default=None, repr=False)
    _agent: Any = field(default=None, repr=False)
    _history: list = field(default_factory=list, repr=False)

    @classmethod
    async def open(
        cls,
        admitted: Admitted,
        *,
        session: StreamSession,
        perform: Callable[[list[Action]], None],
        send: Callable[[str], Awaitable[None]],
        sender: type,
        channel_layer: BaseChannelLayer | None,
        vad_enabled: bool,
    ) -> StreamParts:
        """Build and start the parts; what they report goes to ``session``, its actions to ``perform``."""
        announcer = Announcer(
            sender=sender,
            call_sid=admitted.call_sid,
            stream_sid=admitted.stream_sid,
            call_id=admitted.call_id,
            stream_id=admitted.stream_id,
            channel_layer=channel_layer,
        )
        announcer.start()
        parts = cls(announcer, None, None, session, perform, send)  # type: ignore[arg-type]
        # The one wait (the database, for the agent and its history) comes before the
        # parts that report anything exist: the consumer holds them once this returns.
        await parts._open_conversation(admitted)
        if vad_enabled:
            await vad.model_loaded()  # the VAD is built below, on the event loop
        parts.player = StreamPlayer(
            stream_sid=admitted.stream_sid,
            send=parts._send_audio,
            tts=lambda: backends.tts,
            on_result=lambda item, result: perform(session.playback_finished(item, result)),
            on_started=lambda item: perform(session.playback_started(item)),
            on_first_audio=lambda item: perform(session.playback_first_audio(item)),
            config=PlayerConfig.from_settings(),
        )
        parts.speech = SpeechIn(
            call_sid=admitted.call_sid,
            stream_sid=admitted.stream_sid,
            # A speech agent transcribes the caller itself: speech in keeps only the VAD (barge-in).
            backend=DiscardBackend() if parts.speech_agent else backends.transcription,
            on_event=parts.hear,
            vad_enabled=vad_enabled,
        )
        parts.feed = parts.speech.feed if not parts.speech_agent else parts._feed_both
        if session.config.end_of_turn_model and parts._agent is not None and not parts.speech_agent:
            parts._keep_turn_audio(admitted.stream_sid)
        parts._start_conversation(admitted)
        parts.speech.start()
        heartbeat.beat(admitted.stream_id)
        parts.meter = parts._meter()
        parts.meter.start()
        return parts

    def _meter(self) -> StreamMeter:
        player, agent = self.player, self._agent
        return StreamMeter(
            self.session.stats,
            audio_bytes_sent=lambda: player.audio_bytes_sent,
            queue_depth=lambda: player.queue_depth,
            stt_backend=type(agent if self.speech_agent else backends.transcription).__name__,
            tts_backend=lambda: type(backends.tts).__name__,
            agent_backend=type(agent).__name__ if agent is not None else "",
        )

    async def _open_conversation(self, admitted: Admitted) -> None:
        """Look up the call's agent and its history (one trip to the database, when anything can choose one)."""
        if not (admitted.own_agent or app_settings.AGENT or app_settings.AGENT_SELECTOR):
            self._agent, self._history = None, []
        else:
            await self._look_up_agent(admitted)
        self.speech_agent = isinstance(self._agent, BaseSpeechAgent)
        # A speech agent speaks its greeting itself.
        self.agent_greeting = self._agent.greeting if isinstance(self._agent, BaseAgent) else ""

    async def _look_up_agent(self, admitted: Admitted) -> None:
        try:
            self._agent, self._history = await database.run(_agent_and_history, admitted)
        except DatabaseError:  # an outage right after admission: the call goes on without its agent
            logger.warning("Stream %s: the database is unavailable, no agent on this call", admitted.stream_sid)
            self._agent, self._history = None, []

    def _start_conversation(self, admitted: Admitted) -> None:
        from .agents.engine import ConversationRunner
        from .agents.speech_engine import SpeechConversationRunner

        agent = self._agent
        if agent is None:
            return
        common = dict(
            call=CallContext(admitted.call_sid, admitted.stream_sid),
            history=self._history,
            toolbox=agent.toolbox(),
            session=self.session,
            perform=self.perform,
        )
        if self.speech_agent:
            self.conversation = SpeechConversationRunner(agent, hear=self.hear, **common)
        else:
            self.conversation = ConversationRunner(agent, **common)

    def hear(self, event: Any) -> None:
        """Caller speech, from speech in or a speech agent: the session decides what it means."""
        self.perform(self.session.speech(event, self.player))

    def _keep_turn_audio(self, stream_sid: str) -> None:
        from .endofturn import TurnAudio

        self.turn_audio = TurnAudio(stream_sid)
        speech_feed, keep = self.feed, self.turn_audio.feed

        def feed(mulaw: bytes) -> None:
            keep(mulaw)
            speech_feed(mulaw)

        self.feed = feed

    async def check_end_of_turn(self, check: CheckEndOfTurn) -> None:
        """Ask the end-of-turn model (off the event loop); the session hears its answer."""
        if self.turn_audio is None:
            self.perform(self.session.end_of_turn_checked(check.check_id, True, None, 0.0))
            return
        complete, probability, model_ms = await self.turn_audio.check(check.start_ms)
        self.perform(self.session.end_of_turn_checked(check.check_id, complete, probability, model_ms))

    def _feed_both(self, mulaw: bytes) -> None:
        self.speech.feed(mulaw)
        self.conversation.feed_audio(mulaw)

    # --- the session's actions on the parts ----------------------------------------------

    def announce(self, announcement: Announce) -> None:
        """Measured, then delivered in order (never blocks)."""
        if self.meter is not None:
            self.meter.observe(announcement)
        self.announcer.announce(announcement)

    def play(self, item: PlaybackItem) -> None:
        if self.player.enqueue(item):
            self.perform(self.session.playback_queued(item))

    async def interrupt(self, reason: str, reply_to: str | None) -> None:
        count = await self.player.interrupt(reason)
        self.perform(self.session.playback_interrupted(count, reply_to))

    def start_reply(self, turn_id: int, text: str, dtmf: str, resume: bool) -> None:
        if self.conversation is not None:
            self.conversation.start_reply(turn_id, text, dtmf, resume)

    def cancel_reply(self, turn_id: int) -> None:
        if self.conversation is not None:
            self.conversation.cancel(turn_id)

    def heard(self, heard: ReplyHeard) -> None:
        if self.conversation is not None:
            self.conversation.heard(heard.text, turn_id=heard.turn_id, audio_ms=heard.audio_ms, interrupted=heard.interrupted)

    async def _send_audio(self, text: str) -> None:
        """The player's send: nothing goes out once the stream is closing."""
        if not self.session.may_send:
            return
        try:
            await self.send(text)
        except Exception as exc:
            self.session.send_failed(exc)
            return
        self.perform(self.session.audio_sent(self.player.unconfirmed_audio_bytes))

    async def close(self) -> None:
        """Stop the conversation, speech out and in; what they still owe (outcomes, a last final) is reported first."""
        if self.meter is not None:  # first: nothing below can leave the stream counted as live
            self.meter.close()
        if self.conversation is not None:
            await self.conversation.close()
        await self.player.close("stream closed")
        await self.speech.close()
        heartbeat.forget(self.announcer.stream_id)


def _agent_and_history(admitted: Admitted) -> tuple[object | None, list]:
    """The agent for the call (its own, the selector's, or the default) and its history so far."""
    from voicecall.models import Call

    from .agents.history import load_history
    from .agents.selection import agent_for_call

    call = Call.objects.filter(pk=admitted.call_id).first()
    agent = agent_for_call(call) if call is not None else None
    return agent, (load_history(admitted.call_id) if agent is not None else [])


async def record_end(
    admitted: Admitted, parts: StreamParts | None, *, code: int | None, reason: str, stats: dict, last: list[Announce]
) -> None:
    """Write how the stream ended, after the rows it still owes (outcomes, transcripts); then its last events.

    While the database is away, the end waits with those rows and is written when it is back (mediastream.rows).
    """
    if parts is None:  # admitted but never opened: closed, or shut down, while the database answered
        rows = StreamRows(admitted.stream_sid)
        rows.add(finish_row(admitted.stream_id, close_code=code, close_reason=reason, stats=stats))
        await rows.close(timeout=5.0)
        return
    await parts.announcer.finish(close_code=code, close_reason=reason, stats=stats)
    for announcement in last:
        parts.announcer.announce(announcement)
    await parts.announcer.close()
