"""The per-stream state machine, sans I/O: what happened goes in, what to do comes out.

    AWAITING_START --start--> STARTING --admitted--> STREAMING --stop--> STOPPED
          |                      |                       |
          +-- timeout, refusal --+--------- close -------+--> (teardown) CLOSED

Like h11 and wsproto, :class:`StreamSession` never touches a socket, the
database, the channel layer, a task or a clock. The consumer reports what
happened (the handshake, a frame, the database's answer, caller speech, a
command, a player outcome, the pre-start timer, the socket going away) and
performs the returned actions in order. Every decision about a stream lives
here: which sockets get in, which frames count, when the caller barges in,
when Twilio has stopped draining audio, what each outcome means, and with
which code and reason the stream ends.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from voicecall.logsafe import sanitize
from voicecall.twilio_auth import validate_websocket_upgrade
from voicecall.twiml import STREAM_TOKEN_PARAMETER

from . import messages
from .admission import Admission, AdmissionRegistry, resolve_client_ip
from .audio import SAMPLE_RATE
from .closing import CLOSES, Close, CloseCode
from .db import Admitted
from .events import StreamEvent
from .playback.player import Outcome, PlaybackItem, PlaybackResult
from .protocol import Connected, Dtmf, Mark, Media, RemoteProtocolError, Start, Stop, parse_message
from .refusals import RefusalLog, refusals
from .speech_in import (
    BackendSpeechStarted,
    CallerSpeechEvent,
    Final,
    Partial,
    SpeechEnded,
    SpeechStarted,
    TranscriptionError,
    TranscriptionFailed,
    TranscriptionReady,
)
from .stats import StreamStats
from .turns import CallerTurns, TurnEnd

__all__ = ["StreamSession", "SessionConfig", "State", "PlaybackState", "Action"]

logger = logging.getLogger(__name__)

_SPOKEN = (Outcome.PLAYED, Outcome.UNCONFIRMED, Outcome.INTERRUPTED)


class State(Enum):
    AWAITING_START = "awaiting_start"
    STARTING = "starting"
    STREAMING = "streaming"
    STOPPED = "stopped"  # Twilio sent stop; the socket is closing
    CLOSED = "closed"  # teardown has begun


@dataclass(frozen=True)
class SessionConfig:
    """The settings a stream's decisions depend on (``from_settings`` reads ``MEDIASTREAM``)."""

    max_message_bytes: int = 64 * 1024
    max_connections: int = 128
    max_pending: int = 32
    max_pending_per_ip: int = 4
    max_parked: int = 1024
    pre_start_timeout: float = 5.0
    trusted_proxies: tuple[str, ...] = ()
    max_protocol_warnings: int = 5
    max_unconfirmed_audio_bytes: int = 15 * SAMPLE_RATE
    barge_in: bool = True
    vad_enabled: bool = True
    greeting: str = ""
    greeting_interruptible: bool = True
    stale_stream_seconds: float = 120
    max_transcript_chars: int = 2000
    #: Caller speech over the agent interrupts it only after this much speech (0: at once) ...
    barge_in_min_speech_seconds: float = 0.0
    #: ... or this many words in a transcript (0: no words needed); backchannels ("uh-huh") then pass.
    barge_in_min_words: int = 0
    #: How often a streaming socket announces stream.health (0: never).
    health_seconds: float = 5.0
    #: ``END_OF_TURN``: whether a model judges each pause, and the waits after a final (mediastream.turns.TurnEnd).
    end_of_turn_model: bool = False
    end_of_turn_hold: float = 0.0
    end_of_turn_fallback: float = 0.0

    @classmethod
    def from_settings(cls) -> SessionConfig:
        from .conf import app_settings as s
        from .endofturn import end_of_turn_settings

        end = end_of_turn_settings()
        # The final transcript comes after the VAD's own silence: the rule waits only what is left.
        vad_silence = float(s.VAD.get("END_SILENCE_SECONDS", 0.3))
        return cls(
            max_message_bytes=s.MAX_MESSAGE_BYTES,
            max_connections=s.MAX_CONNECTIONS,
            max_pending=s.MAX_PENDING_CONNECTIONS,
            max_pending_per_ip=s.MAX_PENDING_CONNECTIONS_PER_IP,
            max_parked=s.MAX_PARKED_CONNECTIONS,
            pre_start_timeout=s.PRE_START_TIMEOUT,
            trusted_proxies=tuple(s.TRUSTED_PROXIES),
            max_protocol_warnings=s.MAX_PROTOCOL_WARNINGS_PER_STREAM,
            max_unconfirmed_audio_bytes=int(s.MAX_UNCONFIRMED_AUDIO_SECONDS * SAMPLE_RATE),
            barge_in=s.BARGE_IN,
            vad_enabled=s.VAD.get("ENABLED", True),
            greeting=s.STREAM_GREETING,
            greeting_interruptible=not s.SUPPRESS_BARGE_IN_DURING_GREETING,
            stale_stream_seconds=s.STALE_STREAM_SECONDS,
            max_transcript_chars=s.MAX_TRANSCRIPT_CHARS,
            barge_in_min_speech_seconds=s.BARGE_IN_MIN_SPEECH_SECONDS,
            barge_in_min_words=s.BARGE_IN_MIN_WORDS,
            health_seconds=s.STREAM_HEALTH_SECONDS,
            end_of_turn_model=end.model is not None,
            end_of_turn_hold=round(max(0.0, end.hang_seconds - vad_silence), 3),
            end_of_turn_fallback=round(max(0.0, end.fallback_seconds - vad_silence), 3),
        )


class PlaybackState(Protocol):
    """What the session reads of the player when caller speech starts (the player is one)."""

    @property
    def busy(self) -> bool: ...  # an item is playing or queued

    @property
    def interruptible(self) -> bool: ...  # caller speech may cut off what is playing

    @property
    def unconfirmed_audio_bytes(self) -> int: ...  # sent to Twilio, not yet confirmed by a mark

    @property
    def mark_rtt_ms(self) -> float | None: ...  # the latest mark round trip (None before the first echo)


# --- actions: what the consumer is told to do ------------------------------------------


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept the WebSocket handshake."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Close before accepting: the client sees HTTP 403."""


class Timer(Enum):
    """What a timer is for: each purpose has at most one timer armed at a time."""

    START = "start"  # the socket must send start before it fires
    BARGE_IN = "barge-in"  # the caller must still be talking when it fires
    HEALTH = "health"  # the next stream.health event
    END_OF_TURN = "end-of-turn"  # a held caller turn ends when it fires (MEDIASTREAM["END_OF_TURN"])


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Call :meth:`StreamSession.timer_fired` with ``purpose`` after ``seconds``, replacing that purpose's timer."""

    seconds: float
    purpose: Timer = Timer.START


@dataclass(frozen=True, slots=True)
class CancelTimer:
    purpose: Timer = Timer.START


@dataclass(frozen=True, slots=True)
class CloseSocket:
    close: Close


@dataclass(frozen=True, slots=True)
class AdmitStream:
    """Check the call and token in the database and write the stream row (``db.admit_stream``)."""

    call_sid: str
    stream_sid: str
    token: str | None
    tracks: list[str]
    media_format: dict[str, Any]
    custom_parameters: dict[str, str]
    stale_after: float


@dataclass(frozen=True, slots=True)
class RegisterStream:
    """Make the stream reachable for the call's commands (``mediastream.directory``), before anyone hears it started."""

    call_sid: str


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Bring up the stream's parts (announcer, player, speech in, heartbeat); then :meth:`StreamSession.stream_opened`."""

    admitted: Admitted
    vad_enabled: bool = True


@dataclass(frozen=True, slots=True)
class TranscriptRow:
    speaker: str
    text: str
    interrupted: bool = False
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Announce:
    """Deliver a stream event (event log row, signal, events group), with a transcript row to write first."""

    event: StreamEvent
    data: dict[str, Any]
    transcript: TranscriptRow | None = None


@dataclass(slots=True)
class FeedAudio:
    """Caller audio for the VAD and the transcription session.

    Not frozen, unlike the other actions: one per media frame, and a frozen
    dataclass's ``__init__`` costs three times a plain one's."""

    mulaw: bytes


@dataclass(frozen=True, slots=True)
class Play:
    """Queue an item on the player; report :meth:`StreamSession.playback_queued` if it was taken."""

    item: PlaybackItem


@dataclass(frozen=True, slots=True)
class InterruptPlayback:
    """Cut off what plays, drop the queue, send ``clear``; answer ``reply_to`` with the count."""

    reason: str
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class DeliverMark:
    """Hand Twilio's mark echo to the player."""

    name: str


@dataclass(frozen=True, slots=True)
class Reply:
    channel: str
    message: messages.Reply


@dataclass(frozen=True, slots=True)
class StartReply:
    """Have the agent answer caller turn ``turn_id``.

    ``text`` or ``dtmf`` is the caller's turn; with ``resume`` the turn adds
    nothing (its reply was cut off before a word was heard, and the caller only
    made a noise since): answer the conversation as it stands.
    """

    turn_id: int
    text: str = ""
    dtmf: str = ""
    resume: bool = False


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Stop generating the reply to ``turn_id``; none of its audio may be sent from now on."""

    turn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class CheckEndOfTurn:
    """Ask the end-of-turn model about the caller's audio since ``start_ms``; then :meth:`StreamSession.end_of_turn_checked`."""

    check_id: int
    start_ms: int | None


@dataclass(frozen=True, slots=True)
class ReplyHeard:
    """The caller heard ``text`` (``audio_ms`` of audio) of the reply to ``turn_id`` (0: the greeting).

    It goes into the history; a speech agent's item is cut to it when ``interrupted``.
    """

    turn_id: int
    text: str
    audio_ms: int = 0
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Teardown:
    """Release everything once and record how the stream ended."""

    code: int | None
    reason: str


Action = (
    Accept
    | Refuse
    | StartTimer
    | CancelTimer
    | CloseSocket
    | AdmitStream
    | RegisterStream
    | OpenStream
    | Announce
    | FeedAudio
    | Play
    | InterruptPlayback
    | DeliverMark
    | Reply
    | Teardown
    | StartReply
    | CancelReply
    | ReplyHeard
    | CheckEndOfTurn
)

_NOTHING: list[Action] = []
_STREAMING = State.STREAMING  # a module global: an enum member's lookup costs ten times more, per frame


# --- the session ---------------------------------------------------------------------------


class StreamSession:
    """One Twilio media stream's decisions. Each method returns the actions to perform, in order."""

    def __init__(
        self,
        conn_id: str,
        registry: AdmissionRegistry,
        config: SessionConfig | None = None,
        refusal_log: RefusalLog = refusals,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn_id = conn_id
        self.registry = registry
        self.config = config or SessionConfig()
        self.refusals = refusal_log
        self.state = State.AWAITING_START
        self.client_ip = "unknown"
        self.call_sid = ""
        self.stream_sid = ""
        #: Set once the database admitted the stream: from then on teardown records its end.
        self.admitted: Admitted | None = None
        #: How the stream is being closed, once that is decided; nothing is sent after.
        self.closing: Close | None = None
        self.socket_gone = False
        self.stats = StreamStats(max_warnings=self.config.max_protocol_warnings)
        self.turns = CallerTurns()
        c = self.config
        self.turn_end = TurnEnd(model=c.end_of_turn_model, hold_after_final=c.end_of_turn_hold, fallback_after_final=c.end_of_turn_fallback)
        self._start_msg = Start(sequence_number=None, stream_sid="", call_sid="")
        self._opened = False  # the stream's parts are up (player, speech in)
        self._clock = clock
        # The conversation, when an agent holds it.
        self.agent = False
        self.speech_agent = False  # the agent hears and speaks itself (it takes its own turns)
        self.turn_id = 0  # the caller's latest turn
        self.reply_turn: int | None = None  # the turn whose reply is being written or played
        self._turn_started = 0.0
        self._reply_heard = False  # some of the current reply's audio went out
        self._unanswered = False  # a turn's reply was cancelled before the caller heard any of it
        self._floor_pending = False  # the caller talks over the agent; the barge-in rule has not yet said yes
        self._end_after_reply = False  # a tool ended the call: close once the goodbye has played
        self._public_parameters: dict[str, str] = {}

    @property
    def may_send(self) -> bool:
        """Whether anything more may go out on the socket."""
        return self.closing is None and not self.socket_gone

    # --- the handshake --------------------------------------------------------------

    def connect(self, scope: Mapping[str, Any], evict: Callable[[], None] | None = None) -> list[Action]:
        """The WebSocket upgrade: signed by Twilio, and within the open and pending caps.

        ``evict`` is called if this socket, still silent, must make room for
        another one when the caps are full (then report :meth:`evicted`).
        """
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client") or [None]
        self.client_ip = resolve_client_ip(client[0], headers.get("x-forwarded-for"), self.config.trusted_proxies)
        check = validate_websocket_upgrade(scope["path"], scope.get("query_string", b""), headers)
        if not check.ok:
            self.refusals.refused(
                "bad signature", "Refused media stream handshake from %s: %s", self.client_ip, sanitize(check.reason)
            )
            return [Refuse()]
        config, registry = self.config, self.registry
        if registry.open_connection(self.conn_id, config.max_connections) is not Admission.OK:
            self.refusals.refused(
                "MAX_CONNECTIONS",
                "Refused media stream handshake from %s: %d connections open (MAX_CONNECTIONS)",
                self.client_ip,
                registry.open_count,
            )
            return [Refuse()]
        pending = registry.add_pending(
            self.conn_id, self.client_ip, config.max_pending, config.max_pending_per_ip, evict, config.max_parked
        )
        if pending is not Admission.OK:
            return [Accept(), *self.close(CLOSES.TOO_MANY_PENDING)]
        # Not shorter under a flood: a silent socket closed sooner reconnects sooner,
        # and reconnecting is what a flood costs (bench and tests/test_flood.py).
        return [Accept(), StartTimer(config.pre_start_timeout)]

    def evicted(self) -> list[Action]:
        """The registry made room for a newer socket by evicting this silent one."""
        return self.close(CLOSES.EVICTED)

    def timer_fired(self, purpose: Timer = Timer.START, playback: PlaybackState | None = None) -> list[Action]:
        """A timer went off; ``playback`` is the player now (once the stream's parts are up)."""
        if purpose is Timer.BARGE_IN:
            return self.barge_in_timer_fired(playback)
        if purpose is Timer.HEALTH:
            return self._health(playback)
        if purpose is Timer.END_OF_TURN:
            return self._end_held_turn()
        # The pre-start timer: a socket that has not sent start in time is closed.
        if self.state is State.AWAITING_START:
            return self.close(CLOSES.START_TIMEOUT)
        return _NOTHING

    def _health(self, playback: PlaybackState | None) -> list[Action]:
        """While streaming, every ``health_seconds``: the counters the console shows, and the next tick."""
        if self.state is not State.STREAMING or self.closing is not None:
            return _NOTHING
        stats = self.stats
        data = {
            "media_frames": stats.media_frames,
            "sequence_gaps": stats.sequence_gaps,
            "sequence_reorders": stats.sequence_reorders,
            "timestamp_gaps": stats.timestamp_gaps,
            "marks": stats.marks,
            "mark_rtt_ms": playback.mark_rtt_ms if playback is not None else None,
            "protocol_errors": stats.protocol_error_count,
        }
        return [Announce(StreamEvent.STREAM_HEALTH, data), StartTimer(self.config.health_seconds, Timer.HEALTH)]

    # --- inbound frames ---------------------------------------------------------------

    def receive(self, text: str | None, data: bytes | None = None) -> list[Action]:
        """One WebSocket frame from Twilio (text, or bytes which the protocol does not allow)."""
        limit = self.config.max_message_bytes
        if text is None:
            data = data or b""
            if len(data) > limit:
                return self.close(CLOSES.MESSAGE_TOO_BIG)
            text = data  # parsed, and most likely refused, like any frame
        elif len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit):
            return self.close(CLOSES.MESSAGE_TOO_BIG)
        try:
            msg = parse_message(text)
        except RemoteProtocolError as exc:
            if self.stats.protocol_error(exc.kind):
                log = logger.warning if self.admitted else functools.partial(self.refusals.note, exc.kind)
                log(
                    "Media stream %s from %s: %s (%s)",
                    self.stream_sid or "(no start yet)",
                    self.client_ip,
                    sanitize(str(exc)),
                    exc.kind,
                )
            return _NOTHING
        kind = type(msg)
        if kind is Media:
            if self.state is not _STREAMING:
                self.stats.media_before_start += 1
                return _NOTHING
            self.stats.media(msg)
            return [FeedAudio(msg.payload)]
        if kind is Start:
            return self._start(msg)
        if kind is Connected:
            self.stats.connected = True
            return _NOTHING
        self.stats.sequence(msg.sequence_number)
        if kind is Mark:
            self.stats.marks += 1
            return [DeliverMark(msg.name)] if self._opened else _NOTHING
        if kind is Dtmf:
            if self.state is not State.STREAMING:
                return _NOTHING
            self.stats.dtmf += 1
            actions: list[Action] = [Announce(StreamEvent.DTMF, {"digit": msg.digit})]
            if self.agent and not self.speech_agent:
                held = self.turn_end.take() if self.turn_end.holding else ""
                actions += [CancelTimer(Timer.END_OF_TURN)] if held else []
                actions += self._new_turn(text=held, dtmf=msg.digit)
            return actions
        if kind is Stop and self.state is State.STREAMING:
            self.state = State.STOPPED
            return self.close(CLOSES.STOPPED)
        return _NOTHING

    def _start(self, msg: Start) -> list[Action]:
        if self.closing is not None:  # e.g. the start timeout fired first
            return _NOTHING
        if self.state is not State.AWAITING_START:
            return self.close(CLOSES.DUPLICATE_START)
        self.state = State.STARTING
        self.registry.starting(self.conn_id)
        self.stream_sid = msg.stream_sid
        self._start_msg = msg
        if not msg.call_sid:
            return self._reject(CLOSES.MISSING_CALL_SID)
        self.call_sid = msg.call_sid
        params = dict(msg.custom_parameters)
        token = params.pop(STREAM_TOKEN_PARAMETER, None)
        return [
            AdmitStream(
                call_sid=msg.call_sid,
                stream_sid=msg.stream_sid,
                token=token,
                tracks=list(msg.tracks),
                media_format=msg.media_format,
                custom_parameters=params,
                stale_after=self.config.stale_stream_seconds,
            )
        ]

    def admission_done(self, outcome: Admitted | Close) -> list[Action]:
        """The database's answer to :class:`AdmitStream`."""
        if isinstance(outcome, Close):
            return self._reject(outcome)
        self.admitted = outcome  # from here on, teardown closes the row
        if self.closing is not None:  # closed (timeout) while the database answered
            return _NOTHING
        self.state = State.STREAMING
        self._opened = True
        self.registry.promote(self.conn_id)
        msg = self._start_msg
        public_parameters = {k: v for k, v in msg.custom_parameters.items() if k != STREAM_TOKEN_PARAMETER}
        actions: list[Action] = [
            CancelTimer(),
            # Joined before anyone hears of the stream, so a speak() sent in
            # reaction to stream_started cannot miss it.
            RegisterStream(outcome.call_sid),
            OpenStream(outcome, vad_enabled=self.config.vad_enabled),
        ]
        self._public_parameters = public_parameters
        return actions

    def admission_interrupted(self, outcome: Admitted | Close) -> None:
        """The server stopped while the database answered: teardown still closes a row that was written."""
        if isinstance(outcome, Admitted):
            self.admitted = outcome

    def admission_failed(self, error: BaseException) -> list[Action]:
        """The database could not be reached for :class:`AdmitStream` (``error``): 4013, try again later.

        No row was written. The close is one counted line per socket; the cause
        is logged once per outage (``mediastream.dbgate``).
        """
        logger.debug("Media stream %s: admission failed: %r", self.stream_sid, error)
        return self.close(CLOSES.DATABASE_UNAVAILABLE)

    def stream_opened(
        self, *, finals_expected: bool, agent: bool = False, agent_greeting: str = "", speech_agent: bool = False
    ) -> list[Action]:
        """The stream's parts are up: announce the stream, then greet.

        ``finals_expected``: whether final transcripts will come (without them,
        a backend that drops audio, the VAD alone ends a caller utterance).
        ``agent``: an agent holds the conversation; ``agent_greeting`` is its
        opening line (``STREAM_GREETING`` wins when both are set).
        """
        self.turns = CallerTurns(finals_expected=finals_expected)
        self.agent = agent or speech_agent
        self.speech_agent = speech_agent
        msg = self._start_msg
        actions: list[Action] = [
            Announce(
                StreamEvent.STREAM_STARTED,
                {"tracks": list(msg.tracks), "custom_parameters": self._public_parameters},
            )
        ]
        if self.config.health_seconds:
            actions.append(StartTimer(self.config.health_seconds, Timer.HEALTH))
        greeting = self.config.greeting or agent_greeting
        if greeting:
            item = PlaybackItem(text=greeting, interruptible=self.config.greeting_interruptible)
            if agent:
                item.turn_id = 0
            actions.append(Play(item))
        return actions

    def _reject(self, close: Close) -> list[Action]:
        msg = self._start_msg
        self.refusals.note(
            close.reason,
            "Rejected media stream start from %s (call %s, stream %s): %s",
            self.client_ip,
            sanitize(msg.call_sid or "-", 40),
            sanitize(msg.stream_sid or "-", 40),
            close.reason,
        )
        return self.close(close)

    # --- caller speech ---------------------------------------------------------------

    def speech(self, event: CallerSpeechEvent, playback: PlaybackState) -> list[Action]:
        """What speech in heard; ``playback`` is the player now (for the barge-in decision)."""
        kind = type(event)
        turns = self.turns
        if kind is SpeechStarted:
            return self._speech_started(event.offset_ms, "vad", playback) if turns.on_vad_start() else _NOTHING
        if kind is SpeechEnded:
            turns.on_vad_end()
            return _NOTHING
        if kind is BackendSpeechStarted:
            return self._speech_started(event.offset_ms, "transcription", playback) if turns.on_backend_start() else _NOTHING
        if kind is Partial:
            actions = self._speech_started(None, "partial", playback) if turns.on_partial(event.text) else []
            actions += self._words_heard(event.text, playback)
            return [*actions, Announce(StreamEvent.TRANSCRIPT_PARTIAL, {"text": self._capped(event.text)})]
        if kind is Final:
            actions = self._speech_started(event.start_ms, "final", playback) if turns.on_final(event.text) else []
            actions += self._words_heard(event.text, playback)
            backchannel, self._floor_pending = self._floor_pending, False
            if not event.text:
                if self.agent and not self.speech_agent and self._unanswered and self.reply_turn is None and not self.turn_end.holding:
                    actions += self._new_turn(resume=True)  # only a noise cut the last reply off: answer it
                return actions
            text = self._capped(event.text)
            row = TranscriptRow("caller", text, start_ms=event.start_ms, end_ms=event.end_ms)
            data = {"text": text, "start_ms": event.start_ms, "end_ms": event.end_ms}
            actions.append(Announce(StreamEvent.TRANSCRIPT_FINAL, data, transcript=row))
            # A backchannel ("uh-huh") under the agent's reply is not a turn of its own.
            if self.agent and not self.speech_agent and not (backchannel and self.reply_turn is not None):
                actions += self._caller_final(text, event.start_ms)
            return actions
        if kind is TranscriptionReady:
            return [Announce(StreamEvent.TRANSCRIPTION_READY, {"backend": event.backend})]
        if kind is TranscriptionFailed:
            return [Announce(StreamEvent.TRANSCRIPTION_FAILED, {"backend": event.backend, "error": event.error})]
        if kind is TranscriptionError:
            return [Announce(StreamEvent.TRANSCRIPTION_ERROR, {"backend": event.backend, "error": event.error})]
        raise TypeError(f"not a caller speech event: {event!r}")

    def _capped(self, text: str) -> str:
        """A transcript cut to ``max_transcript_chars`` (a runaway backend must not grow rows without end)."""
        limit = self.config.max_transcript_chars
        return text if len(text) <= limit else text[:limit].rstrip() + "…"

    def _speech_started(self, offset_ms: int | None, source: str, playback: PlaybackState) -> list[Action]:
        actions: list[Action] = [Announce(StreamEvent.SPEECH_STARTED, {"offset_ms": offset_ms, "source": source})]
        if source != "final" and self.turn_end.speech_resumed():
            actions.append(CancelTimer(Timer.END_OF_TURN))  # the held turn goes on
        config = self.config
        talking_over = self._is_barge_in(playback) or (self.agent and self.reply_turn is not None)
        if not talking_over or self.closing is not None:
            return actions
        if source == "final" or not (config.barge_in_min_speech_seconds or config.barge_in_min_words):
            return actions + self._take_floor(playback)
        # The barge-in rule wants more speech, or words, before the agent stops.
        self._floor_pending = True
        if config.barge_in_min_speech_seconds and not config.barge_in_min_words:
            actions.append(StartTimer(config.barge_in_min_speech_seconds, Timer.BARGE_IN))
        return actions

    def _words_heard(self, text: str, playback: PlaybackState) -> list[Action]:
        """A transcript of the utterance talking over the agent: enough words take the floor."""
        words = self.config.barge_in_min_words
        if self._floor_pending and words and len(text.split()) >= words:
            return self._take_floor(playback)
        return _NOTHING

    def barge_in_timer_fired(self, playback: PlaybackState | None) -> list[Action]:
        """The minimum barge-in speech time has passed: if the caller still talks, the agent stops."""
        if self._floor_pending and self.turns.in_utterance and not self.turns.quiet and self.state is State.STREAMING:
            return self._take_floor(playback)
        return _NOTHING

    def _take_floor(self, playback: PlaybackState) -> list[Action]:
        """The caller talks over the agent: it stops at once, and the reply being written is fenced off."""
        self._floor_pending = False
        actions: list[Action] = []
        if self._is_barge_in(playback):
            actions.append(InterruptPlayback("barge-in"))
        if self.agent and self.reply_turn is not None:
            actions += self._cancel_reply("caller spoke again")
        return actions

    # --- the end of a caller turn (MEDIASTREAM["END_OF_TURN"]) ------------------------------

    def _caller_final(self, text: str, start_ms: int | None) -> list[Action]:
        """A final transcript for the agent: its turn ends now, or is held for the end-of-turn rule."""
        end = self.turn_end
        if end.immediate:
            return self._new_turn(text=text)
        wait = end.final(text, start_ms)
        if self.turns.in_utterance and not self.turns.quiet:
            end.speech_resumed()  # the caller is already talking again: the next final decides
            return [CancelTimer(Timer.END_OF_TURN)]
        if not wait:
            return self._end_held_turn()
        actions: list[Action] = [StartTimer(wait, Timer.END_OF_TURN)]
        if end.model:
            actions.append(CheckEndOfTurn(end.check_id, end.start_ms))
        return actions

    def end_of_turn_checked(self, check_id: int, complete: bool, probability: float | None, model_ms: float) -> list[Action]:
        """The end-of-turn model's answer for check ``check_id`` (stale answers are dropped)."""
        wait = self.turn_end.checked(check_id, complete, probability)
        if wait is None and check_id != self.turn_end.check_id:
            return _NOTHING
        data = {"turn_id": self.turn_id + 1, "complete": complete, "probability": probability, "model_ms": model_ms}
        actions: list[Action] = [Announce(StreamEvent.AGENT_TURN_CHECKED, data)]
        if wait is None:
            return actions  # incomplete: the fallback timer runs on
        if wait:
            return [*actions, StartTimer(wait, Timer.END_OF_TURN)]
        return [*actions, CancelTimer(Timer.END_OF_TURN), *self._end_held_turn()]

    def _end_held_turn(self) -> list[Action]:
        """The held turn's wait is over: the agent answers it, unless the caller is talking again."""
        if not self.turn_end.holding or (self.turns.in_utterance and not self.turns.quiet):
            return _NOTHING
        if not self.agent or self.state is not State.STREAMING:
            self.turn_end.take()
            return _NOTHING
        verdicts = self.turn_end.take_verdicts()
        return self._new_turn(text=self.turn_end.take(), end_of_turn=verdicts)

    # --- the conversation (an agent holds it) ---------------------------------------------

    def _new_turn(self, *, text: str = "", dtmf: str = "", resume: bool = False, end_of_turn: list | None = None) -> list[Action]:
        """The caller's turn ended (a final transcript, a keypress): the agent answers it, and only it."""
        actions: list[Action] = []
        if self.reply_turn is not None:
            actions += self._cancel_reply("caller spoke again")
        self._unanswered = False
        self.turn_id += 1
        self.reply_turn = self.turn_id
        self._reply_heard = False
        self._turn_started = self._clock()
        data = {"turn_id": self.turn_id, "text": text, "dtmf": dtmf, "resume": resume}
        if end_of_turn:
            data["end_of_turn"] = end_of_turn  # the model's verdicts at the turn's pauses
        return [*actions, Announce(StreamEvent.AGENT_TURN_STARTED, data), StartReply(self.turn_id, text, dtmf, resume)]

    def _cancel_reply(self, reason: str) -> list[Action]:
        turn, self.reply_turn = self.reply_turn, None
        if turn is None:
            return _NOTHING
        if not self._reply_heard:
            self._unanswered = True
        data = {"turn_id": turn, "reason": reason, "ms": self._ms()}
        return [CancelReply(turn, reason), Announce(StreamEvent.AGENT_REPLY_CANCELLED, data)]

    def _ms(self) -> float:
        """Milliseconds since the current turn started."""
        return round((self._clock() - self._turn_started) * 1000, 1)

    def speech_reply(self, item: PlaybackItem) -> list[Action]:
        """A speech agent began a response of its own (it heard the caller end a turn): it plays."""
        if self.state is not State.STREAMING:
            return [CancelReply(item.turn_id or 0, "stream closed")]
        self.reply_turn = item.turn_id
        self._reply_heard = False
        self._turn_started = self._clock()
        started = Announce(StreamEvent.AGENT_TURN_STARTED, {"turn_id": item.turn_id, "text": "", "dtmf": "", "resume": False})
        return [started, Play(item)]

    def speech_agent_failed(self, error: str) -> list[Action]:
        """The speech agent's session failed: the call goes on without it, and the log says why."""
        self.reply_turn = None
        data = {"turn_id": self.turn_id, "reason": f"agent error: {sanitize(error, 200)}", "ms": self._ms()}
        return [Announce(StreamEvent.AGENT_REPLY_CANCELLED, data)]

    def reply_ready(self, turn_id: int, item: PlaybackItem) -> list[Action]:
        """The first sentence of a reply is written. Played only if its turn is still the caller's latest."""
        if turn_id != self.reply_turn or self.state is not State.STREAMING:
            return [CancelReply(turn_id, "stale")]  # fenced: not one frame of it goes out
        return [Play(item)]

    def agent_progress(self, turn_id: int, event: StreamEvent, data: dict[str, Any]) -> list[Action]:
        """First token, tool called, tool result: announced with the turn's timing, if the turn is current."""
        if turn_id != self.reply_turn:
            return _NOTHING
        return [Announce(event, {"turn_id": turn_id, "ms": self._ms(), **data})]

    def reply_done(self, turn_id: int, *, text: str, spoke: bool, end_call: bool) -> list[Action]:
        """The agent finished writing; a reply that spoke finishes when its audio has played."""
        if turn_id != self.reply_turn:
            return _NOTHING
        self._end_after_reply = self._end_after_reply or end_call
        if spoke:
            return _NOTHING
        self.reply_turn = None
        data = {"turn_id": turn_id, "text": text, "heard_text": "", "interrupted": False, "ms": self._ms()}
        actions: list[Action] = [Announce(StreamEvent.AGENT_REPLY_FINISHED, data)]
        if self._end_after_reply:
            actions += self.close(CLOSES.AGENT_ENDED)
        return actions

    def reply_failed(self, turn_id: int, error: str) -> list[Action]:
        """The agent's model or vendor failed: the turn ends unanswered, and the log says why."""
        if turn_id != self.reply_turn:
            return _NOTHING
        self.reply_turn = None
        data = {"turn_id": turn_id, "reason": f"agent error: {sanitize(error, 200)}", "ms": self._ms()}
        return [Announce(StreamEvent.AGENT_REPLY_CANCELLED, data)]

    def playback_first_audio(self, item: PlaybackItem) -> list[Action]:
        """The first frame of an item went out: for a reply, that is the turn's first audio."""
        if item.turn_id is None or item.turn_id != self.reply_turn:
            return _NOTHING
        self._reply_heard = True
        return [Announce(StreamEvent.AGENT_FIRST_AUDIO, {"turn_id": item.turn_id, "ms": self._ms()})]

    def _is_barge_in(self, playback: PlaybackState) -> bool:
        """Caller speech cuts the agent off only when it talks over the agent.

        That is: something is queued, playing, or still buffered at Twilio (sent
        but not yet confirmed by a mark), and what plays may be interrupted.
        """
        if not self._opened or self.state is State.CLOSED or self.closing is not None or not self.config.barge_in:
            return False
        if not (playback.busy or playback.unconfirmed_audio_bytes):
            return False
        return not playback.busy or playback.interruptible

    # --- commands from any process (mediastream.api) ---------------------------------

    def command(self, message: dict[str, Any]) -> list[Action]:
        """A channel-layer message for this stream's call."""
        command = messages.parse_command(message)
        live = self.state is State.STREAMING and self.closing is None  # a closing stream plays nothing more
        if isinstance(command, messages.Say):
            if not live:
                return self._reply(command.reply_to, messages.Result.no_stream(command.item_id))
            item = PlaybackItem(
                text=command.text,
                audio=command.audio,
                id=command.item_id or PlaybackItem().id,
                reply_to=command.reply_to,
                interruptible=command.interruptible,
            )
            return [Announce(StreamEvent.PLAYBACK_QUEUED, {"item_id": item.id, "text": item.text}), Play(item)]
        if isinstance(command, messages.Interrupt):
            if not live:
                return self._reply(command.reply_to, messages.Interrupted(count=0, live=False))
            return [InterruptPlayback(sanitize(command.reason, 60), command.reply_to)]
        raise ValueError(f"No handler for message type {message.get('type')}")

    def _reply(self, channel: str | None, reply: messages.Reply) -> list[Action]:
        return [Reply(channel, reply)] if channel else _NOTHING

    # --- what the player reports ---------------------------------------------------------

    def playback_queued(self, item: PlaybackItem) -> list[Action]:
        return self._reply(item.reply_to, messages.Queued(item.id, self.stream_sid))

    def playback_started(self, item: PlaybackItem) -> list[Action]:
        return [Announce(StreamEvent.PLAYBACK_STARTED, {"item_id": item.id, "text": item.text})]

    def playback_finished(self, item: PlaybackItem, result: PlaybackResult) -> list[Action]:
        """An item's outcome: its event, the transcript of what the caller heard, the waiting caller's answer."""
        row = None
        interrupted = result.outcome is Outcome.INTERRUPTED
        spoken = bool(item.text) and result.outcome in _SPOKEN and (not interrupted or result.audio_seconds > 0)
        if spoken:
            # An agent's reply is kept as far as the caller let it go (that is what the
            # conversation history is made of); any other item with its whole text.
            reply = interrupted and item.turn_id is not None and self.agent
            row = TranscriptRow("agent", (result.heard_text if reply else "") or item.text, interrupted=interrupted)
        actions: list[Action] = [
            Announce(StreamEvent.PLAYBACK_FINISHED, result.as_dict(), transcript=row),
            *self._reply(item.reply_to, messages.Result(result)),
        ]
        if item.turn_id is None or not self.agent:
            return actions
        heard = row.text if row is not None else ""
        if heard or self.speech_agent:
            actions.append(ReplyHeard(item.turn_id, heard, round(result.heard_seconds * 1000), interrupted))
        if item.turn_id == 0 or item.turn_id != self.reply_turn:
            return actions  # the greeting, or a reply already cancelled (and announced so)
        self.reply_turn = None
        data = {"turn_id": item.turn_id, "text": item.text, "heard_text": heard, "interrupted": interrupted, "ms": self._ms()}
        actions.append(Announce(StreamEvent.AGENT_REPLY_FINISHED, data))
        if self._end_after_reply:
            actions += self.close(CLOSES.AGENT_ENDED)
        return actions

    def playback_interrupted(self, count: int, reply_to: str | None) -> list[Action]:
        return self._reply(reply_to, messages.Interrupted(count=count, live=True))

    def audio_sent(self, unconfirmed_audio_bytes: int) -> list[Action]:
        """Backpressure: daphne's send() never blocks, so audio Twilio has not confirmed is the sign it stopped draining."""
        if unconfirmed_audio_bytes <= self.config.max_unconfirmed_audio_bytes or self.closing is not None:
            return _NOTHING
        logger.warning(
            "Media stream %s: %.1fs of audio sent but not played",
            self.stream_sid,
            unconfirmed_audio_bytes / SAMPLE_RATE,
        )
        return self.close(CLOSES.BACKPRESSURE)

    def send_failed(self, error: BaseException) -> None:
        """Twilio hung up and the server noticed before this stream did; the disconnect follows."""
        self.socket_gone = True
        logger.info("Media stream %s: send after the socket closed (%s)", self.stream_sid, type(error).__name__)

    # --- the end ------------------------------------------------------------------------

    def close(self, close: Close) -> list[Action]:
        """Decide to close, once; from then on nothing more is sent."""
        if self.closing is not None:
            return _NOTHING
        self.closing = close
        if self.admitted is None:  # refused before start: counted, not a line per socket
            log = functools.partial(self.refusals.refused, close.reason)
        else:
            log = logger.info if close.code == CloseCode.NORMAL else logger.warning
        log(
            "Closing media stream %s from %s: %d %s",
            sanitize(self.stream_sid, 40) or "(no start)",
            self.client_ip,
            close.code,
            close.reason,
        )
        return [CloseSocket(close)]

    def disconnected(self, code: int | None) -> list[Action]:
        """The socket is gone (Twilio hung up, or our own close completed)."""
        if self.closing is not None:
            return [Teardown(self.closing.code, self.closing.reason)]
        return [Teardown(code, "socket closed" if self.state is not State.STOPPED else "stream stopped")]

    def shutdown(self) -> list[Action]:
        """The server is stopping and cancelled the consumer."""
        return [Teardown(CLOSES.SHUTDOWN.code, CLOSES.SHUTDOWN.reason)]

    def crashed(self) -> list[Action]:
        """A bug in this process ended the consumer."""
        return [Teardown(CLOSES.INTERNAL_ERROR.code, "consumer crashed")]

    def ended(self) -> list[Action]:
        """The consumer returned (normally after :meth:`disconnected` already tore down)."""
        return [Teardown(CloseCode.NORMAL, "socket closed")]

    def stopped(self, code: int | None, reason: str) -> list[Action]:
        """The stream's end is recorded: the last event it announces."""
        return [Announce(StreamEvent.STREAM_STOPPED, {"close_code": code, "close_reason": reason})]

    def teardown(self) -> None:
        """Teardown has begun: the stream takes no more commands and holds no admission slot."""
        self.state = State.CLOSED
        self.registry.release(self.conn_id)
