"""The stream session, pure: events in, actions out (no sockets, no database, no event loop).

Every transition of :class:`mediastream.session.StreamSession` is driven here
with plain values: a handshake scope, frame text, the database's answer as a
value, caller speech events, channel-layer command dicts, player outcomes and
the timer firing (the test is the clock).
"""

from __future__ import annotations

import json

import pytest

from mediastream import messages
from mediastream import session as s
from mediastream.admission import AdmissionRegistry
from mediastream.closing import CLOSES, CloseCode
from mediastream.db import Admitted
from mediastream.events import StreamEvent
from mediastream.playback.player import Outcome, PlaybackItem, PlaybackResult
from mediastream.session import SessionConfig, State, StreamSession
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

from . import streams
from .session_support import Silent

CALL, STREAM = "CA" + "a" * 32, "MZ" + "b" * 32
ADMITTED = Admitted(call_id=1, stream_id=2, call_sid=CALL, stream_sid=STREAM)


def scope(*, signed: bool = True, client: str = "203.0.113.7", xff: str | None = None) -> dict:
    headers = []
    if signed:
        headers.append((b"x-twilio-signature", streams.signature().encode()))
    if xff:
        headers.append((b"x-forwarded-for", xff.encode()))
    return {"path": streams.STREAM_PATH, "query_string": b"", "headers": headers, "client": [client, 5000]}


def new(config: SessionConfig | None = None, registry: AdmissionRegistry | None = None) -> StreamSession:
    return StreamSession("conn-1", registry or AdmissionRegistry(), config or SessionConfig())


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def announced(actions) -> list[StreamEvent]:
    return [a.event for a in of(actions, s.Announce)]


def streaming(config: SessionConfig | None = None, registry: AdmissionRegistry | None = None) -> StreamSession:
    session = new(config, registry)
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok"))
    session.admission_done(ADMITTED)
    session.stream_opened(finals_expected=True)
    return session


# --- handshake ---------------------------------------------------------------------------


def test_signed_handshake_is_accepted_and_arms_the_start_timer():
    registry = AdmissionRegistry()
    session = new(SessionConfig(pre_start_timeout=3.0), registry)
    assert session.connect(scope()) == [s.Accept(), s.StartTimer(3.0)]
    assert registry.open_count == 1 and registry.pending_count == 1
    assert session.state is State.AWAITING_START


def test_unsigned_handshake_is_refused_before_accept_and_holds_no_slot():
    registry = AdmissionRegistry()
    assert new(registry=registry).connect(scope(signed=False)) == [s.Refuse()]
    assert registry.open_count == 0


def test_handshake_over_the_connection_cap_is_refused():
    registry = AdmissionRegistry()
    config = SessionConfig(max_connections=1)
    assert StreamSession("a", registry, config).connect(scope())[0] == s.Accept()
    assert StreamSession("b", registry, config).connect(scope()) == [s.Refuse()]


def test_handshake_over_the_pending_cap_is_accepted_then_closed_4013():
    registry = AdmissionRegistry()
    config = SessionConfig(max_pending_per_ip=1)
    StreamSession("a", registry, config).connect(scope())
    session = StreamSession("b", registry, config)
    assert session.connect(scope()) == [s.Accept(), s.CloseSocket(CLOSES.TOO_MANY_PENDING)]
    assert session.closing == CLOSES.TOO_MANY_PENDING and not session.may_send


def test_forwarded_for_counts_only_behind_a_trusted_proxy():
    trusted = new(SessionConfig(trusted_proxies=("10.0.0.0/8",)))
    trusted.connect(scope(client="10.0.0.5", xff="198.51.100.9"))
    assert trusted.client_ip == "198.51.100.9"
    untrusted = new()
    untrusted.connect(scope(client="203.0.113.7", xff="198.51.100.9"))
    assert untrusted.client_ip == "203.0.113.7"


# --- the pre-start timer (the test is the clock) ---------------------------------------


def test_start_timeout_closes_a_socket_that_never_started():
    session = new()
    session.connect(scope())
    assert session.timer_fired() == [s.CloseSocket(CLOSES.START_TIMEOUT)]
    assert session.timer_fired() == []  # closing is decided once
    # A start that arrives after the timeout decided to close is ignored.
    assert session.receive(streams.start(CALL, STREAM, "tok")) == []


def test_timer_after_start_does_nothing():
    session = streaming()
    assert session.timer_fired() == []


# --- start and admission -------------------------------------------------------------------


def test_start_asks_the_database_with_the_token_taken_out_of_the_parameters():
    session = new(SessionConfig(stale_stream_seconds=77))
    session.connect(scope())
    actions = session.receive(streams.start(CALL, STREAM, "tok", caller="alice"))
    assert actions == [
        s.AdmitStream(
            call_sid=CALL,
            stream_sid=STREAM,
            token="tok",
            tracks=["inbound"],
            media_format={"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            custom_parameters={"caller": "alice"},
            stale_after=77,
        )
    ]
    assert session.state is State.STARTING and session.stream_sid == STREAM


def test_admitted_stream_joins_its_group_before_announcing_and_then_greets():
    registry = AdmissionRegistry()
    session = new(SessionConfig(greeting="Hello", greeting_interruptible=False, vad_enabled=False), registry)
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok", caller="alice"))
    actions = session.admission_done(ADMITTED)
    assert actions == [s.CancelTimer(), s.RegisterStream(CALL), s.OpenStream(ADMITTED, vad_enabled=False)]
    assert session.state is State.STREAMING and session.admitted == ADMITTED
    assert registry.pending_count == 0 and registry.open_count == 1
    # Once the parts are up: the stream is announced, then greeted.
    announce, health, play = session.stream_opened(finals_expected=True)
    assert health == s.StartTimer(5.0, s.Timer.HEALTH)
    assert announce == s.Announce(StreamEvent.STREAM_STARTED, {"tracks": ["inbound"], "custom_parameters": {"caller": "alice"}})
    assert play.item.text == "Hello" and play.item.interruptible is False and play.item.turn_id is None


def test_an_agent_greets_when_no_stream_greeting_is_set():
    session = new()
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok"))
    session.admission_done(ADMITTED)
    *_, play = session.stream_opened(finals_expected=True, agent=True, agent_greeting="Hi, this is the restaurant.")
    assert play.item.text == "Hi, this is the restaurant." and play.item.turn_id == 0


def test_refused_admission_closes_with_the_databases_reason():
    session = new()
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "wrong"))
    assert session.admission_done(CLOSES.INVALID_TOKEN) == [s.CloseSocket(CLOSES.INVALID_TOKEN)]
    assert session.admitted is None


def test_start_without_call_sid_is_rejected_without_asking_the_database():
    session = new()
    session.connect(scope())
    assert session.receive(streams.start("", STREAM, "tok")) == [s.CloseSocket(CLOSES.MISSING_CALL_SID)]


def test_second_start_closes_the_socket():
    session = streaming()
    assert session.receive(streams.start(CALL, STREAM, "tok")) == [s.CloseSocket(CLOSES.DUPLICATE_START)]


def test_admission_answered_after_the_timeout_closed_only_keeps_the_row_for_teardown():
    session = new()
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok"))
    session.timer_fired()  # STARTING: the timer no longer closes
    assert session.closing is None
    session.close(CLOSES.SHUTDOWN)
    assert session.admission_done(ADMITTED) == []
    assert session.admitted == ADMITTED and session.state is State.STARTING


def test_admission_interrupted_by_shutdown_still_hands_the_row_to_teardown():
    session = new()
    session.admission_interrupted(CLOSES.UNKNOWN_CALL)
    assert session.admitted is None
    session.admission_interrupted(ADMITTED)
    assert session.admitted == ADMITTED


# --- frames ------------------------------------------------------------------------------------


def test_media_feeds_audio_only_while_streaming_and_counts_the_rest():
    session = new()
    session.connect(scope())
    assert session.receive(streams.media(STREAM)) == []
    assert session.stats.media_before_start == 1
    session = streaming()
    assert session.receive(streams.media(STREAM, payload=b"\x01" * 160)) == [s.FeedAudio(b"\x01" * 160)]
    assert session.stats.media_frames == 1 and session.stats.media_bytes == 160


def test_sequence_gaps_are_counted_across_event_kinds():
    session = streaming()
    session.receive(streams.media(STREAM, seq=2))
    session.receive(streams.media(STREAM, seq=5, timestamp=20))
    session.receive(streams.mark(STREAM, "m", seq=8))
    assert session.stats.sequence_gaps == 4


def test_malformed_frames_are_counted_and_ignored():
    session = streaming(SessionConfig(max_protocol_warnings=1))
    for text in ("not json", "[1]", json.dumps({"event": "nope"}), json.dumps({"event": "media"})):
        assert session.receive(text) == []
    assert session.stats.protocol_errors == {"malformed": 2, "unknown_event": 1, "invalid": 1}
    assert session.state is State.STREAMING


def test_oversize_frames_close_4009_text_or_binary():
    config = SessionConfig(max_message_bytes=1000)
    assert streaming(config).receive("x" * 1001) == [s.CloseSocket(CLOSES.MESSAGE_TOO_BIG)]
    assert streaming(config).receive("é" * 600) == [s.CloseSocket(CLOSES.MESSAGE_TOO_BIG)]  # 1200 bytes of UTF-8
    assert streaming(config).receive(None, b"\0" * 1001) == [s.CloseSocket(CLOSES.MESSAGE_TOO_BIG)]
    assert streaming(config).receive("x" * 1000) == []  # at the limit: parsed (and refused as malformed)


def test_small_binary_frame_is_a_malformed_frame():
    session = streaming()
    assert session.receive(None, b"\x00\x01") == []
    assert session.stats.protocol_errors == {"malformed": 1}


def test_connected_is_noted():
    session = new()
    session.connect(scope())
    assert session.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})) == []
    assert session.stats.connected


def test_dtmf_is_announced_only_while_streaming():
    dtmf = json.dumps({"event": "dtmf", "streamSid": STREAM, "sequenceNumber": "3", "dtmf": {"digit": "7"}})
    before = new()
    before.connect(scope())
    assert before.receive(dtmf) == []
    session = streaming()
    assert session.receive(dtmf) == [s.Announce(StreamEvent.DTMF, {"digit": "7"})]
    assert session.stats.dtmf == 1


def test_marks_go_to_the_player_once_the_stream_is_open():
    before = new()
    before.connect(scope())
    assert before.receive(streams.mark(STREAM, "m1")) == []
    session = streaming()
    assert session.receive(streams.mark(STREAM, "m1")) == [s.DeliverMark("m1")]
    assert session.stats.marks == 1


def test_stop_closes_normally_and_teardown_says_so():
    session = streaming()
    assert session.receive(streams.stop(CALL, STREAM)) == [s.CloseSocket(CLOSES.STOPPED)]
    assert session.state is State.STOPPED
    assert session.receive(streams.stop(CALL, STREAM)) == []
    assert session.disconnected(1000) == [s.Teardown(CloseCode.NORMAL, "Stream stopped")]


def test_stop_before_start_is_ignored():
    session = new()
    session.connect(scope())
    assert session.receive(streams.stop(CALL, STREAM)) == []


# --- caller speech and barge-in ---------------------------------------------------------------------


def test_one_speech_start_per_utterance_whatever_reports_it():
    session = streaming()
    idle = Silent()
    assert announced(session.speech(SpeechStarted(offset_ms=320, detected_ms=384), idle)) == [StreamEvent.SPEECH_STARTED]
    assert session.speech(BackendSpeechStarted(offset_ms=320), idle) == []
    assert announced(session.speech(Partial("book a"), idle)) == [StreamEvent.TRANSCRIPT_PARTIAL]
    actions = session.speech(Final("book a table", 300, 1500), idle)
    assert announced(actions) == [StreamEvent.TRANSCRIPT_FINAL]
    final = actions[0]
    assert final.data == {"text": "book a table", "start_ms": 300, "end_ms": 1500}
    assert final.transcript == s.TranscriptRow("caller", "book a table", start_ms=300, end_ms=1500)


def test_speech_start_data_names_its_source():
    session = streaming()
    actions = session.speech(BackendSpeechStarted(offset_ms=None), Silent())
    assert actions[0].data == {"offset_ms": None, "source": "transcription"}
    session.speech(Final("hi"), Silent())
    actions = session.speech(Final("lone final", 5, 9), Silent())  # no start came: the final fires one
    assert [a.data.get("source") for a in actions] == ["final", None]


def test_vad_end_alone_closes_the_utterance_when_no_finals_will_come():
    session = streaming()
    session.stream_opened(finals_expected=False)
    session.speech(SpeechStarted(offset_ms=0, detected_ms=64), Silent())
    session.speech(SpeechEnded(offset_ms=900, detected_ms=1400), Silent())
    assert announced(session.speech(SpeechStarted(offset_ms=2000, detected_ms=2064), Silent())) == [StreamEvent.SPEECH_STARTED]


def test_empty_final_closes_the_utterance_and_announces_nothing():
    session = streaming()
    session.speech(SpeechStarted(offset_ms=0, detected_ms=64), Silent())
    assert session.speech(Final(""), Silent()) == []
    assert session.turns.utterances == 1 and not session.turns.in_utterance


@pytest.mark.parametrize(
    "playback, barges_in",
    [
        (Silent(), False),  # nothing playing, nothing buffered: just speech
        (Silent(busy=True), True),  # talking over the agent
        (Silent(busy=True, interruptible=False), False),  # a greeting that may not be cut off
        (Silent(unconfirmed_audio_bytes=800), True),  # Twilio still plays what was sent
    ],
)
def test_barge_in_only_when_the_caller_talks_over_interruptible_speech(playback, barges_in):
    session = streaming()
    actions = session.speech(SpeechStarted(offset_ms=0, detected_ms=64), playback)
    assert (s.InterruptPlayback("barge-in") in actions) is barges_in
    assert announced(actions) == [StreamEvent.SPEECH_STARTED]


def test_barge_in_can_be_switched_off():
    session = streaming(SessionConfig(barge_in=False))
    assert of(session.speech(SpeechStarted(offset_ms=0, detected_ms=64), Silent(busy=True)), s.InterruptPlayback) == []


def test_no_barge_in_after_teardown_began():
    session = streaming()
    session.teardown()
    assert of(session.speech(Partial("late"), Silent(busy=True)), s.InterruptPlayback) == []


def test_transcription_lifecycle_events_are_announced():
    session = streaming()
    assert session.speech(TranscriptionReady("X"), Silent()) == [s.Announce(StreamEvent.TRANSCRIPTION_READY, {"backend": "X"})]
    assert session.speech(TranscriptionFailed("X", "down"), Silent())[0].data == {"backend": "X", "error": "down"}
    assert session.speech(TranscriptionError("X", "oops"), Silent())[0].event is StreamEvent.TRANSCRIPTION_ERROR


# --- commands ---------------------------------------------------------------------------------


def test_say_queues_an_item_and_the_queued_reply_follows_acceptance():
    session = streaming()
    command = messages.Say(item_id="say-1", text="Hi", interruptible=False, reply_to="reply.1").to_message()
    announce, play = session.command(command)
    assert announce == s.Announce(StreamEvent.PLAYBACK_QUEUED, {"item_id": "say-1", "text": "Hi"})
    assert play.item.id == "say-1" and play.item.text == "Hi" and play.item.interruptible is False
    assert session.playback_queued(play.item) == [s.Reply("reply.1", messages.Queued("say-1", STREAM))]


def test_say_of_audio_carries_the_bytes():
    session = streaming()
    _, play = session.command(messages.Say(item_id="a", audio=b"\xff" * 160).to_message())
    assert play.item.audio == b"\xff" * 160


def test_commands_without_a_live_stream_answer_no_stream():
    session = new()
    session.connect(scope())
    say = messages.Say(item_id="say-1", text="Hi", reply_to="r").to_message()
    assert session.command(say) == [s.Reply("r", messages.Result.no_stream("say-1"))]
    interrupt = messages.Interrupt("op", reply_to="r").to_message()
    assert session.command(interrupt) == [s.Reply("r", messages.Interrupted(count=0, live=False))]
    assert session.command(messages.Say(item_id="x", text="Hi").to_message()) == []  # nobody waits


def test_interrupt_command_sanitises_its_reason_and_answers_the_count():
    session = streaming()
    [action] = session.command(messages.Interrupt("op\nerator " + "x" * 100, reply_to="r").to_message())
    assert "\n" not in action.reason and len(action.reason) <= 63 and action.reply_to == "r"
    assert session.playback_interrupted(2, "r") == [s.Reply("r", messages.Interrupted(count=2, live=True))]
    assert session.playback_interrupted(2, None) == []


def test_unknown_command_type_is_a_bug():
    with pytest.raises(ValueError):
        streaming().command({"type": "playback.dance"})


# --- what the player reports ------------------------------------------------------------------------


def _result(outcome: Outcome, audio_seconds: float = 1.0) -> PlaybackResult:
    return PlaybackResult("say-1", outcome, text="Hello there", audio_seconds=audio_seconds)


@pytest.mark.parametrize(
    "outcome, audio_seconds, row",
    [
        (Outcome.PLAYED, 1.0, s.TranscriptRow("agent", "Hello there")),
        (Outcome.UNCONFIRMED, 1.0, s.TranscriptRow("agent", "Hello there")),
        (Outcome.INTERRUPTED, 0.4, s.TranscriptRow("agent", "Hello there", interrupted=True)),
        (Outcome.INTERRUPTED, 0.0, None),  # cut off before any audio went out: not heard
        (Outcome.FAILED, 0.0, None),
        (Outcome.REJECTED, 0.0, None),
    ],
)
def test_finished_item_is_announced_with_what_the_caller_heard(outcome, audio_seconds, row):
    session = streaming()
    item = PlaybackItem(text="Hello there", id="say-1", reply_to="r")
    result = _result(outcome, audio_seconds)
    announce, reply = session.playback_finished(item, result)
    assert announce == s.Announce(StreamEvent.PLAYBACK_FINISHED, result.as_dict(), transcript=row)
    assert reply == s.Reply("r", messages.Result(result))


def test_started_item_is_announced():
    item = PlaybackItem(text="Hi", id="say-9")
    assert streaming().playback_started(item) == [s.Announce(StreamEvent.PLAYBACK_STARTED, {"item_id": "say-9", "text": "Hi"})]


def test_backpressure_closes_once_when_twilio_stops_draining():
    session = streaming(SessionConfig(max_unconfirmed_audio_bytes=8000))
    assert session.audio_sent(8000) == []
    assert session.audio_sent(8001) == [s.CloseSocket(CLOSES.BACKPRESSURE)]
    assert session.audio_sent(9000) == []
    assert not session.may_send


def test_failed_send_stops_sending_without_deciding_a_close():
    session = streaming()
    session.send_failed(ConnectionResetError())
    assert not session.may_send and session.closing is None
    assert session.disconnected(1006) == [s.Teardown(1006, "socket closed")]


# --- the end ------------------------------------------------------------------------------------------


def test_teardown_reports_the_decided_close_over_the_socket_code():
    session = streaming()
    session.close(CLOSES.BACKPRESSURE)
    assert session.disconnected(1006) == [s.Teardown(CLOSES.BACKPRESSURE.code, CLOSES.BACKPRESSURE.reason)]


def test_shutdown_crash_and_return_each_name_their_close():
    session = streaming()
    assert session.shutdown() == [s.Teardown(CLOSES.SHUTDOWN.code, CLOSES.SHUTDOWN.reason)]
    assert session.crashed() == [s.Teardown(CloseCode.INTERNAL_ERROR, "consumer crashed")]
    assert session.ended() == [s.Teardown(CloseCode.NORMAL, "socket closed")]


def test_teardown_frees_the_slot_and_refuses_commands():
    registry = AdmissionRegistry()
    session = streaming(registry=registry)
    session.teardown()
    assert session.state is State.CLOSED and registry.open_count == 0
    assert session.command(messages.Say(item_id="x", text="Hi", reply_to="r").to_message()) == [
        s.Reply("r", messages.Result.no_stream("x"))
    ]
    assert session.stopped(1000, "Stream stopped") == [
        s.Announce(StreamEvent.STREAM_STOPPED, {"close_code": 1000, "close_reason": "Stream stopped"})
    ]


def test_stream_events_are_recorded_and_broadcast_as_documented():
    assert not StreamEvent.TRANSCRIPT_PARTIAL.recorded and StreamEvent.TRANSCRIPT_PARTIAL.broadcast
    assert not StreamEvent.STREAM_STARTED.recorded  # the admission transaction writes that row
    assert StreamEvent.DTMF.recorded and not StreamEvent.PLAYBACK_QUEUED.broadcast


# --- floods: eviction, a shorter window under pressure, counted log lines ---------------------------


def test_a_new_socket_displaces_a_silent_one_which_closes_4013_beyond_the_parking_cap():
    registry = AdmissionRegistry()
    config = SessionConfig(max_pending=2, max_pending_per_ip=4, max_parked=0)
    evicted: list[StreamSession] = []
    silent = []
    for n in range(2):
        session = StreamSession(f"silent-{n}", registry, config)
        session.connect(scope(client="198.51.100.1"), evict=lambda session=session: evicted.append(session))
        silent.append(session)
    newcomer = StreamSession("call", registry, config)
    assert newcomer.connect(scope(client="198.51.100.2"), evict=lambda: None)[0] == s.Accept()
    assert evicted == [silent[0]]
    assert silent[0].evicted() == [s.CloseSocket(CLOSES.EVICTED)]
    assert CLOSES.EVICTED.code == CloseCode.TRY_AGAIN_LATER


def test_a_socket_that_sent_start_frees_its_pending_slot_while_the_database_answers():
    registry = AdmissionRegistry()
    config = SessionConfig(max_pending=1, max_pending_per_ip=1)
    starting = StreamSession("starting", registry, config)
    starting.connect(scope(client="198.51.100.1"), evict=lambda: pytest.fail("evicted a starting socket"))
    starting.receive(streams.start(CALL, STREAM, "tok"))
    # The same address (one Twilio media server ramping up) gets the slot at once.
    next_call = StreamSession("next", registry, config)
    assert next_call.connect(scope(client="198.51.100.1"), evict=lambda: None) == [s.Accept(), s.StartTimer(5.0)]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_logged_as_counts_per_reason(caplog):
    import logging

    from mediastream.refusals import RefusalLog

    clock = _Clock()
    log = RefusalLog(interval=10.0, burst=2, clock=clock)
    registry = AdmissionRegistry()
    with caplog.at_level(logging.WARNING, logger="mediastream.refusals"):
        for n in range(50):
            StreamSession(f"x{n}", registry, refusal_log=log).connect(scope(signed=False))
        assert len(caplog.records) == 2
        clock.now = 10.5
        StreamSession("late", registry, refusal_log=log).connect(scope(signed=False))
    summary = caplog.records[2].getMessage()
    assert summary.startswith("48 more media stream sockets refused") and summary.endswith(": bad signature")
    assert len(caplog.records) == 4  # the summary, then a new interval logs in full again


def test_silent_sockets_closing_at_the_timeout_are_counted_not_logged_each(caplog):
    import logging

    from mediastream.refusals import RefusalLog

    log = RefusalLog(interval=60.0, burst=1, clock=_Clock())
    registry = AdmissionRegistry()
    with caplog.at_level(logging.INFO):
        for n in range(20):
            session = StreamSession(f"t{n}", registry, refusal_log=log)
            session.connect(scope(client=f"198.51.100.{n}"))
            assert session.timer_fired() == [s.CloseSocket(CLOSES.START_TIMEOUT)]
            session.teardown()
    assert len([r for r in caplog.records if r.name.startswith("mediastream")]) == 1


def test_caller_transcripts_are_capped():
    session = streaming(SessionConfig(max_transcript_chars=10))
    [announce] = [a for a in session.speech(Final("x" * 5000), Silent()) if a.event is StreamEvent.TRANSCRIPT_FINAL]
    assert announce.data["text"] == "x" * 10 + "…" and announce.transcript.text == "x" * 10 + "…"
    [partial] = [a for a in session.speech(Partial("y" * 50), Silent()) if a.event is StreamEvent.TRANSCRIPT_PARTIAL]
    assert len(partial.data["text"]) == 11


def test_a_streaming_socket_announces_its_health_until_it_closes():
    session = streaming(SessionConfig(health_seconds=1.5))
    session.receive(streams.media(STREAM, seq=2))
    session.receive(streams.media(STREAM, seq=5, timestamp=20))
    health, again = session.timer_fired(s.Timer.HEALTH, Silent())
    assert health.event is StreamEvent.STREAM_HEALTH and not health.event.recorded
    assert health.data["media_frames"] == 2 and health.data["sequence_gaps"] == 2
    assert again == s.StartTimer(1.5, s.Timer.HEALTH)
    session.close(CLOSES.STOPPED)
    assert session.timer_fired(s.Timer.HEALTH, Silent()) == []
