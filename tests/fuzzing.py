"""Hypothesis strategies and properties for fuzzing the stream protocol and session (shared with bench/fuzz.py).

Two properties, both pure (no I/O):

* :func:`check_frame`: ``mediastream.protocol.parse_message`` on any frame (text,
  bytes, Twilio-like JSON with wrong types, huge numbers, odd unicode, deep
  nesting) returns an inbound message or raises a ``RemoteProtocolError``,
  and what a parsed ``start`` carries can be stored in PostgreSQL.
* :func:`check_session`: a :class:`mediastream.session.StreamSession` driven the
  way the consumer drives it (handshake, frames, timer, admission answers,
  caller speech, commands, player outcomes, the socket going away) raises
  nothing, returns only documented actions, closes only with codes from
  ``CLOSES``, sends nothing once a close is decided, tears down once and
  releases its admission slot.
"""

from __future__ import annotations

import base64
import json
import typing
from dataclasses import dataclass, field

from hypothesis import strategies as st

from mediastream import session as s
from mediastream.admission import AdmissionRegistry
from mediastream.closing import CLOSES, Close
from mediastream.db import Admitted
from mediastream.playback.player import Outcome, PlaybackItem, PlaybackResult
from mediastream.protocol import (
    MAX_STORED_DEPTH,
    Connected,
    Dtmf,
    Mark,
    Media,
    RemoteProtocolError,
    Start,
    Stop,
    parse_message,
)
from mediastream.refusals import RefusalLog
from mediastream.speech_in import (
    BackendSpeechStarted,
    Final,
    Partial,
    SpeechEnded,
    SpeechStarted,
    TranscriptionError,
    TranscriptionFailed,
    TranscriptionReady,
)

from .session_support import Silent

__all__ = ["frames", "check_frame", "session_steps", "check_session"]

CALL, STREAM = "CA" + "a" * 32, "MZ" + "b" * 32
EVENTS = ["connected", "start", "media", "dtmf", "mark", "stop", "clear", "play", ""]

# --- frames ------------------------------------------------------------------------------------

#: Any unicode, lone surrogates and NUL included.
odd_text = st.text(st.characters(codec=None), max_size=24) | st.sampled_from(["\x00", "\ud800", "\udfff", "\ufeff", "\u202e"])
numbers = (
    st.integers()
    | st.integers(min_value=2**31 - 2, max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([10**18, -(10**18), 10**30])
)
scalars = st.none() | st.booleans() | numbers | odd_text | st.integers(0, 10**6).map(str)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4), max_leaves=8)


def _maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a valid value, sometimes anything at all."""
    return st.one_of(valid, valid, json_values)


sids = _maybe(st.sampled_from([CALL, STREAM, "AC" + "1" * 32, "MZ" + "c" * 32, ""]))
counters = _maybe(st.integers(0, 10**6).map(str))
payloads = _maybe(st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()))


def _objects(**fields: st.SearchStrategy) -> st.SearchStrategy:
    """A JSON object with some of ``fields`` (each may be missing) and maybe an extra junk key."""
    junk = st.dictionaries(odd_text, json_values, max_size=1)
    return st.builds(lambda known, extra: {**extra, **known}, st.fixed_dictionaries({}, optional=fields), junk)


start_objects = _objects(
    streamSid=sids,
    callSid=sids,
    accountSid=sids,
    tracks=_maybe(st.lists(st.sampled_from(["inbound", "outbound"]), max_size=2)),
    mediaFormat=_maybe(st.fixed_dictionaries({"encoding": st.just("audio/x-mulaw"), "sampleRate": st.just(8000)})),
    customParameters=_maybe(st.dictionaries(odd_text, _maybe(st.sampled_from(["tok", "Jane"])), max_size=3)),
)
twilio_messages = _objects(
    event=_maybe(st.sampled_from(EVENTS)),
    sequenceNumber=counters,
    streamSid=sids,
    protocol=odd_text,
    version=odd_text,
    start=_maybe(start_objects),
    media=_maybe(_objects(track=_maybe(st.just("inbound")), chunk=counters, timestamp=counters, payload=payloads)),
    dtmf=_maybe(_objects(digit=_maybe(st.sampled_from(list("0123456789*#wA")) | odd_text), track=odd_text)),
    mark=_maybe(_objects(name=odd_text)),
    stop=_maybe(_objects(callSid=sids, accountSid=sids)),
)




def _mostly(valid: st.SearchStrategy, junk: st.SearchStrategy = json_values) -> st.SearchStrategy:
    """Nine times in ten a valid value, else ``junk``."""
    return st.integers(0, 9).flatmap(lambda pick: valid if pick else junk)


_valid_sid = st.sampled_from([STREAM, "MZ" + "c" * 32])
#: Twilio's messages with each field nearly always right: most parse, and reach what a Start stores.
plausible_messages = st.one_of(
    st.fixed_dictionaries(
        {
            "event": st.just("start"),
            "sequenceNumber": _mostly(st.just("1")),
            "streamSid": _mostly(_valid_sid),
            "start": st.fixed_dictionaries(
                {
                    "streamSid": _mostly(_valid_sid),
                    "callSid": _mostly(st.just(CALL)),
                    "accountSid": _mostly(st.just("AC" + "1" * 32)),
                    "tracks": _mostly(st.lists(_mostly(st.sampled_from(["inbound", "outbound"])), max_size=2)),
                    "mediaFormat": _mostly(st.dictionaries(_mostly(st.sampled_from(["encoding", "sampleRate"]), odd_text), json_values, max_size=3)),
                    "customParameters": _mostly(st.dictionaries(_mostly(st.just("token"), odd_text), _mostly(st.just("tok"), odd_text), max_size=3)),
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event": st.just("media"),
            "sequenceNumber": _mostly(counters),
            "streamSid": _mostly(_valid_sid),
            "media": st.fixed_dictionaries(
                {"track": _mostly(st.just("inbound")), "chunk": _mostly(counters), "timestamp": _mostly(counters), "payload": _mostly(payloads)}
            ),
        }
    ),
    st.fixed_dictionaries({"event": st.just("dtmf"), "streamSid": _mostly(_valid_sid), "dtmf": st.fixed_dictionaries({"digit": _mostly(st.sampled_from(list("0123456789*#")))})}),
    st.fixed_dictionaries({"event": st.just("mark"), "streamSid": _mostly(_valid_sid), "mark": st.fixed_dictionaries({"name": _mostly(odd_text)})}),
    st.fixed_dictionaries({"event": st.just("stop"), "streamSid": _mostly(_valid_sid), "stop": _mostly(st.fixed_dictionaries({"callSid": st.just(CALL)}))}),
)


def _dumps(message: object, ascii_only: bool) -> str:
    return json.dumps(message, ensure_ascii=ascii_only, allow_nan=True)


def _nested(depth: int, opener: str) -> str:
    return {"[": "[" * depth, "{": '{"a":' * depth, "]": "[" * depth + "]" * depth}[opener]


deep_frames = st.builds(_nested, st.integers(1, 40_000), st.sampled_from(["[", "{", "]"]))
#: One WebSocket frame's content: text (str) or a binary frame (bytes).
frames = st.one_of(
    st.builds(_dumps, plausible_messages, st.booleans()),
    st.builds(_dumps, twilio_messages, st.booleans()),
    st.builds(_dumps, json_values, st.booleans()),
    st.text(st.characters(codec=None), max_size=64),
    st.binary(max_size=64),
    deep_frames,
)

INBOUND = (Connected, Start, Media, Dtmf, Mark, Stop)
ERROR_KINDS = {"malformed", "unknown_event", "invalid"}


def assert_storable(message: Start) -> None:
    """What admission writes from a start is valid PostgreSQL JSON: no NaN, NUL or lone surrogate, shallow."""
    stored = json.dumps(
        {"tracks": list(message.tracks), "media_format": message.media_format, "custom": message.custom_parameters},
        allow_nan=False,
        ensure_ascii=False,
    )
    assert "\x00" not in stored
    stored.encode("utf-8")  # raises on a lone surrogate
    assert _depth(message.media_format) <= MAX_STORED_DEPTH


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def check_frame(frame: str | bytes) -> str:
    """The parser's answer to ``frame``: the message type's name, or the error kind. Asserts the contract."""
    try:
        message = parse_message(frame)
    except RemoteProtocolError as exc:
        assert exc.kind in ERROR_KINDS, exc.kind
        return exc.kind
    assert isinstance(message, INBOUND), type(message)
    if isinstance(message, Start):
        assert_storable(message)
    return type(message).__name__


# --- the session ---------------------------------------------------------------------------------


def _start_frame(token: str = "tok") -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": STREAM,
            "start": {"streamSid": STREAM, "callSid": CALL, "tracks": ["inbound"], "customParameters": {"token": token}},
        }
    )


def _media_frame(seq: int) -> str:
    payload = base64.b64encode(b"\xff" * 160).decode()
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": STREAM, "media": {"track": "inbound", "payload": payload}})


session_frames = st.one_of(
    st.just(_start_frame()),
    st.integers(2, 50).map(_media_frame),
    st.just(json.dumps({"event": "stop", "streamSid": STREAM, "stop": {"callSid": CALL}})),
    st.just(json.dumps({"event": "dtmf", "streamSid": STREAM, "dtmf": {"digit": "5"}})),
    st.sampled_from(["say-1", "say-2", "unknown"]).map(lambda n: json.dumps({"event": "mark", "streamSid": STREAM, "mark": {"name": n}})),
    frames,
)
REFUSALS = [CLOSES.UNKNOWN_CALL, CLOSES.CALL_ENDED, CLOSES.INVALID_TOKEN, CLOSES.STREAM_EXISTS, CLOSES.DUPLICATE_STREAM_SID]
admission_answers = st.one_of(st.just(Admitted(call_id=1, stream_id=2, call_sid=CALL, stream_sid=STREAM)), st.sampled_from(REFUSALS))
speech_events = st.one_of(
    st.builds(SpeechStarted, offset_ms=st.integers(0, 10**6), detected_ms=st.integers(0, 10**6)),
    st.builds(SpeechEnded, offset_ms=st.integers(0, 10**6), detected_ms=st.integers(0, 10**6)),
    st.builds(BackendSpeechStarted, offset_ms=st.none() | st.integers(0, 10**6)),
    st.builds(Partial, text=odd_text),
    st.builds(Final, text=odd_text | st.text(min_size=3000, max_size=3000), start_ms=st.none() | st.integers(), end_ms=st.none() | st.integers()),
    st.builds(TranscriptionReady, backend=odd_text),
    st.builds(TranscriptionFailed, backend=odd_text, error=odd_text),
    st.builds(TranscriptionError, backend=odd_text, error=odd_text),
)
player_states = st.builds(Silent, busy=st.booleans(), interruptible=st.booleans(), unconfirmed_audio_bytes=st.integers(0, 10**6))
reply_channels = st.none() | st.sampled_from(["specific.reply!1", ""])
commands = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("playback.say"), "item_id": st.text(max_size=8), "text": odd_text, "interruptible": st.booleans()},
        optional={"reply_to": reply_channels, "audio": st.binary(max_size=16)},
    ),
    st.fixed_dictionaries({"type": st.just("playback.interrupt"), "reason": odd_text}, optional={"reply_to": reply_channels}),
)

#: One thing that happens to a stream, as the consumer would report it.
steps = st.one_of(
    st.tuples(st.just("frame"), session_frames),
    st.tuples(st.just("frame"), session_frames),
    st.tuples(st.just("frame"), session_frames),
    st.tuples(st.just("timer")),
    st.tuples(st.just("admission"), admission_answers),
    st.tuples(st.just("speech"), speech_events, player_states),
    st.tuples(st.just("command"), commands),
    st.tuples(st.just("played"), st.integers(0, 7), st.sampled_from(list(Outcome)), st.floats(0, 30)),
    st.tuples(st.just("audio_sent"), st.integers(0, 10**6)),
    st.tuples(st.just("send_failed")),
    st.tuples(st.just("crowd"), st.integers(1, 4)),
    st.tuples(st.just("disconnect"), st.none() | st.integers(1000, 4999)),
    st.tuples(st.just("shutdown")),
    st.tuples(st.just("crashed")),
)
#: (signed handshake?, start and admit the stream first?, then these steps).
session_steps = st.tuples(st.sampled_from([True, True, True, False]), st.booleans(), st.lists(steps, max_size=40))

ACTION_TYPES = typing.get_args(s.Action)
CLOSE_VALUES = {value for value in vars(CLOSES).values() if isinstance(value, Close)}
#: Once a close is decided, nothing opens, admits or closes again: only teardown and the record of
#: what already happened (events, caller audio in flight, mark echoes, replies owed) follow.
NEVER_AFTER_CLOSE = (s.Accept, s.Refuse, s.StartTimer, s.CloseSocket, s.AdmitStream, s.RegisterStream, s.OpenStream)
#: Nor, strictly, new playback work (see tests/test_fuzz_session.py for where the session still does it).
NO_PLAYBACK_AFTER_CLOSE = (s.Play, s.InterruptPlayback)


def handshake_scope(signed: bool) -> dict:
    """The WebSocket upgrade's scope, signed for the stream URL or not."""
    from . import streams

    headers = [(b"x-twilio-signature", streams.signature().encode())] if signed else []
    return {"path": streams.STREAM_PATH, "query_string": b"", "headers": headers, "client": ["203.0.113.7", 5000]}


@dataclass
class _Driver:
    """Performs a session's actions the way the consumer does, with the test as the I/O."""

    session: s.StreamSession
    registry: AdmissionRegistry
    forbidden_after_close: tuple = NEVER_AFTER_CLOSE
    admission_asked: bool = False
    joined: bool = False  # commands reach the stream only through the call's group
    opened: bool = False  # speech in, the player and their reports exist only once the stream is open
    closed: bool = False  # a close was decided (CloseSocket or Refuse)
    refused: bool = False  # the handshake was refused: the socket never opened, only its end is reported
    torn_down: bool = False
    teardown_codes: set = field(default_factory=set)
    queued: list[PlaybackItem] = field(default_factory=list)
    socket_codes: set = field(default_factory=set)
    crowd: int = 0

    def perform(self, actions: list) -> None:
        assert isinstance(actions, list), actions
        for action in actions:
            assert isinstance(action, ACTION_TYPES), action
            if self.torn_down:
                raise AssertionError(f"{action!r} after teardown")
            if self.closed and isinstance(action, self.forbidden_after_close):
                raise AssertionError(f"{action!r} after the close was decided")
            if isinstance(action, s.CloseSocket):
                assert action.close in CLOSE_VALUES, action.close
                self.closed = True
            elif isinstance(action, s.Refuse):
                self.closed = self.refused = True
            elif isinstance(action, s.AdmitStream):
                self.admission_asked = True
            elif isinstance(action, s.RegisterStream):
                self.joined = True
            elif isinstance(action, s.OpenStream):
                self.opened = True
                self.session.stream_opened(finals_expected=True)
            elif isinstance(action, s.Play):
                self.queued.append(action.item)
                self.perform(self.session.playback_queued(action.item))
            elif isinstance(action, s.InterruptPlayback):
                count, self.queued = len(self.queued), []
                self.perform(self.session.playback_interrupted(count, action.reply_to))
            elif isinstance(action, s.Teardown):
                codes = {c.code for c in CLOSE_VALUES} | self.socket_codes | {None}
                assert action.code in codes, action
                self.teardown(action)

    def teardown(self, action: s.Teardown) -> None:
        self.session.teardown()
        self.torn_down = True
        admitted = self.session.admitted
        if admitted is not None:
            last = self.session.stopped(action.code, action.reason)
            assert [type(a) for a in last] == [s.Announce], last
        conn_id = self.session.conn_id
        assert conn_id not in self.registry.open and conn_id not in self.registry.pending

    def step(self, step: tuple) -> None:
        kind, *args = step
        session = self.session
        if self.refused and kind not in ("disconnect", "shutdown", "crashed"):
            return
        if (kind == "command" and not self.joined) or (kind in ("speech", "played", "audio_sent") and not self.opened):
            return
        if kind == "frame":
            frame = args[0]
            self.perform(session.receive(frame, None) if isinstance(frame, str) else session.receive(None, frame))
        elif kind == "timer":
            self.perform(session.timer_fired())
        elif kind == "admission":
            if self.admission_asked:  # the database answers only what it was asked, once
                self.admission_asked = False
                self.perform(session.admission_done(args[0]))
        elif kind == "speech":
            self.perform(session.speech(args[0], args[1]))
        elif kind == "command":
            self.perform(session.command(args[0]))
        elif kind == "played" and self.queued:
            index, outcome, seconds = args
            item = self.queued.pop(index % len(self.queued))
            self.perform(session.playback_started(item))
            result = PlaybackResult(item.id, outcome, text=item.text, audio_seconds=seconds)
            self.perform(session.playback_finished(item, result))
        elif kind == "audio_sent":
            self.perform(session.audio_sent(args[0]))
        elif kind == "send_failed":
            session.send_failed(ConnectionError("gone"))
        elif kind == "crowd":  # more silent sockets from new addresses; full caps evict the oldest silent one
            config = session.config
            for _ in range(args[0]):
                self.crowd += 1
                ip = f"198.51.100.{self.crowd % 250}"
                self.registry.add_pending(f"crowd-{self.crowd}", ip, config.max_pending, config.max_pending_per_ip, lambda: None)
        elif kind == "disconnect":
            self.socket_codes.add(args[0])
            self.perform(session.disconnected(args[0]))
        elif kind == "shutdown":
            self.perform(session.shutdown())
        elif kind == "crashed":
            self.perform(session.crashed())


def check_session(case: tuple[bool, bool, list[tuple]], *, strict: bool = False) -> str:
    """Drive one session through ``case`` (see :data:`session_steps`); return how it ended. Asserts the contract.

    ``strict`` also forbids new playback work once a close is decided.
    """
    signed, admitted_first, steps_ = case
    registry = AdmissionRegistry()
    refusal_log = RefusalLog(log=_QUIET)
    session = s.StreamSession("conn-fuzz", registry, s.SessionConfig(max_pending=4), refusal_log)
    forbidden = NEVER_AFTER_CLOSE + NO_PLAYBACK_AFTER_CLOSE if strict else NEVER_AFTER_CLOSE
    driver = _Driver(session, registry, forbidden)
    driver.perform(session.connect(handshake_scope(signed), evict=lambda: driver.perform(session.evicted())))
    if admitted_first:
        prologue = [("frame", _start_frame()), ("admission", Admitted(call_id=1, stream_id=2, call_sid=CALL, stream_sid=STREAM))]
        steps_ = prologue + steps_
    for step in steps_:
        if driver.torn_down:
            break
        driver.step(step)
    if not driver.torn_down:  # the socket always goes away in the end
        driver.socket_codes.add(1000)
        driver.perform(session.disconnected(1000))
    assert driver.torn_down
    return session.closing.reason if session.closing else session.state.value


class _Quiet:
    """A logger for the refusal log that drops what fuzzing makes it say."""

    def warning(self, *args, **kwargs) -> None:
        pass


_QUIET = _Quiet()
