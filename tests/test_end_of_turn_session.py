"""MEDIASTREAM["END_OF_TURN"] in the stream session: when a caller's pause ends the turn the agent answers.

Pure: the session is driven with the events speech in would report and the
model's answers the consumer would bring back (mediastream/turns.py TurnEnd).
The model itself on real audio, through a live stream: tests/test_end_of_turn_calls.py.
"""

from __future__ import annotations

from mediastream import session as s
from mediastream.events import StreamEvent
from mediastream.session import SessionConfig
from mediastream.speech_in import Final, SpeechEnded, SpeechStarted

from .session_support import Silent
from .support import mediastream_settings
from .test_session import ADMITTED, CALL, STREAM, new, of, scope, streams

IDLE = Silent()
MODEL = SessionConfig(end_of_turn_model=True, end_of_turn_hold=0.0, end_of_turn_fallback=1.7)


def agent_session(config: SessionConfig) -> s.StreamSession:
    session = new(config)
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok"))
    session.admission_done(ADMITTED)
    session.stream_opened(finals_expected=True, agent=True)
    return session


def said(session, text: str, start_ms: int, end_ms: int) -> list:
    """The caller says ``text``: the VAD hears it start and stop, then its final transcript arrives."""
    actions = session.speech(SpeechStarted(start_ms, start_ms + 64), IDLE)
    actions += session.speech(SpeechEnded(end_ms, end_ms + 300), IDLE)
    return actions + session.speech(Final(text, start_ms, end_ms), IDLE)


def started(actions) -> list[s.StartReply]:
    return of(actions, s.StartReply)


def test_without_a_model_the_final_starts_the_turn_at_once():
    session = agent_session(SessionConfig())
    actions = said(session, "What are your opening hours?", 300, 1900)
    assert [reply.text for reply in started(actions)] == ["What are your opening hours?"]
    assert not of(actions, s.CheckEndOfTurn) and not of(actions, s.StartTimer)


def test_a_pause_the_model_calls_incomplete_does_not_start_a_turn_and_the_rest_joins_it():
    session = agent_session(MODEL)
    actions = said(session, "My number is", 300, 1200)
    [check] = of(actions, s.CheckEndOfTurn)
    assert check.start_ms == 300 and s.StartTimer(1.7, s.Timer.END_OF_TURN) in actions
    assert not started(actions)
    checked = session.end_of_turn_checked(check.check_id, False, 0.06, 41.0)
    assert not started(checked) and StreamEvent.AGENT_TURN_CHECKED in [a.event for a in of(checked, s.Announce)]
    # The caller goes on before the fallback: the timer no longer counts, and the next part joins the turn.
    actions = session.speech(SpeechStarted(2000, 2064), IDLE)
    assert s.CancelTimer(s.Timer.END_OF_TURN) in actions
    actions = session.speech(SpeechEnded(3500, 3800), IDLE) + session.speech(Final("five five five one two", 2000, 3500), IDLE)
    [check2] = of(actions, s.CheckEndOfTurn)
    assert check2.start_ms == 300 and check2.check_id != check.check_id and not started(actions)
    actions = session.end_of_turn_checked(check2.check_id, True, 0.94, 45.0)
    [reply] = started(actions)
    assert reply.text == "My number is five five five one two"
    [turn] = [a for a in of(actions, s.Announce) if a.event is StreamEvent.AGENT_TURN_STARTED]
    assert [v["complete"] for v in turn.data["end_of_turn"]] == [False, True]
    assert s.CancelTimer(s.Timer.END_OF_TURN) in actions


def test_an_incomplete_turn_ends_at_the_fallback_when_the_caller_stays_silent():
    session = agent_session(MODEL)
    [check] = of(said(session, "I am calling about", 300, 1200), s.CheckEndOfTurn)
    session.end_of_turn_checked(check.check_id, False, 0.2, 40.0)
    [reply] = started(session.timer_fired(s.Timer.END_OF_TURN, IDLE))
    assert reply.text == "I am calling about"
    assert session.timer_fired(s.Timer.END_OF_TURN, IDLE) == []  # nothing held any more


def test_a_late_answer_about_a_pause_the_caller_already_talked_past_is_dropped():
    session = agent_session(MODEL)
    [check] = of(said(session, "My number is", 300, 1200), s.CheckEndOfTurn)
    session.speech(SpeechStarted(1600, 1664), IDLE)  # speaking again before the model answered
    assert session.end_of_turn_checked(check.check_id, True, 0.99, 300.0) == []
    assert session.timer_fired(s.Timer.END_OF_TURN, IDLE) == []  # the caller is mid-utterance: not the end


def test_a_keypress_ends_a_held_turn_with_its_words():
    session = agent_session(MODEL)
    said(session, "My account number is", 300, 1200)
    actions = session.receive(_dtmf("5"))
    [reply] = started(actions)
    assert reply.text == "My account number is" and reply.dtmf == "5"


def test_a_longer_hang_without_a_model_waits_and_joins_what_follows():
    session = agent_session(SessionConfig(end_of_turn_hold=0.5))
    actions = said(session, "My number is", 300, 1200)
    assert not started(actions) and s.StartTimer(0.5, s.Timer.END_OF_TURN) in actions and not of(actions, s.CheckEndOfTurn)
    session.speech(SpeechStarted(1700, 1764), IDLE)
    said_rest = session.speech(SpeechEnded(2500, 2800), IDLE) + session.speech(Final("five five five", 1700, 2500), IDLE)
    assert not started(said_rest)
    [reply] = started(session.timer_fired(s.Timer.END_OF_TURN, IDLE))
    assert reply.text == "My number is five five five"


def test_settings_become_the_waits_left_after_the_vads_own_silence():
    with mediastream_settings(END_OF_TURN={"MODEL": "smart-turn", "FALLBACK_SECONDS": 2.0}, VAD={"END_SILENCE_SECONDS": 0.3}):
        config = SessionConfig.from_settings()
    assert config.end_of_turn_model and config.end_of_turn_hold == 0.0 and config.end_of_turn_fallback == 1.7
    with mediastream_settings(END_OF_TURN={"HANG_SECONDS": 0.8}, VAD={"END_SILENCE_SECONDS": 0.3}):
        config = SessionConfig.from_settings()
    assert not config.end_of_turn_model and config.end_of_turn_hold == 0.5
    assert SessionConfig.from_settings().end_of_turn_hold == 0.0  # the defaults: the final ends the turn


def _dtmf(digit: str) -> str:
    import json

    return json.dumps({"event": "dtmf", "streamSid": STREAM, "sequenceNumber": "9", "dtmf": {"track": "inbound_track", "digit": digit}})
