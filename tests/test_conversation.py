"""Turn-taking with an agent on the call, pure: caller turns, fencing, barge-in rules, the end of a call.

The stream session decides; these tests drive it with caller speech events,
player reports and the agent runner's reports, and read the actions.
"""

from __future__ import annotations

import pytest

from mediastream import session as s
from mediastream.admission import AdmissionRegistry
from mediastream.closing import CLOSES
from mediastream.db import Admitted
from mediastream.events import StreamEvent
from mediastream.playback.player import Outcome, PlaybackItem, PlaybackResult
from mediastream.session import SessionConfig, StreamSession
from mediastream.speech_in import Final, Partial, SpeechEnded, SpeechStarted

from . import streams
from .session_support import Silent
from .test_session import ADMITTED, CALL, STREAM, scope


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def agent_session(config: SessionConfig | None = None) -> tuple[StreamSession, Clock]:
    clock = Clock()
    session = StreamSession("conn", AdmissionRegistry(), config or SessionConfig(), clock=clock)
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok"))
    session.admission_done(ADMITTED)
    session.stream_opened(finals_expected=True, agent=True)
    return session, clock


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def events(actions) -> list[StreamEvent]:
    return [a.event for a in of(actions, s.Announce)]


def say(session: StreamSession, text: str, playback=None) -> list:
    """The caller says ``text``: a VAD start, then its final."""
    playback = playback or Silent()
    actions = session.speech(SpeechStarted(offset_ms=0, detected_ms=64), playback)
    actions += session.speech(SpeechEnded(offset_ms=900, detected_ms=1400), playback)
    return actions + session.speech(Final(text), playback)


def test_a_final_transcript_starts_a_numbered_turn_the_agent_answers():
    session, _ = agent_session()
    actions = say(session, "I'd like a table")
    assert of(actions, s.StartReply) == [s.StartReply(1, "I'd like a table")]
    assert StreamEvent.AGENT_TURN_STARTED in events(actions)
    actions = say(session, "for two")
    assert of(actions, s.StartReply) == [s.StartReply(2, "for two")]


def test_without_an_agent_no_turns_are_taken():
    session = StreamSession("conn", AdmissionRegistry())
    session.connect(scope())
    session.receive(streams.start(CALL, STREAM, "tok"))
    session.admission_done(ADMITTED)
    session.stream_opened(finals_expected=True)
    assert of(say(session, "hello"), s.StartReply) == []


def test_a_reply_plays_only_while_its_turn_is_the_latest():
    session, _ = agent_session()
    say(session, "first question")
    item = PlaybackItem(stream=None, turn_id=1)
    assert session.reply_ready(1, item) == [s.Play(item)]
    # The caller speaks again before turn 1's reply is written: its reply is fenced off.
    actions = session.speech(SpeechStarted(offset_ms=2000, detected_ms=2064), Silent())
    assert s.CancelReply(1, "caller spoke again") in actions
    assert StreamEvent.AGENT_REPLY_CANCELLED in events(actions)
    late = PlaybackItem(turn_id=1)
    assert session.reply_ready(1, late) == [s.CancelReply(1, "stale")]  # never a Play
    actions = session.speech(Final("second question"), Silent())
    assert of(actions, s.StartReply) == [s.StartReply(2, "second question")]


def test_speaking_over_a_playing_reply_interrupts_it_and_fences_it():
    session, _ = agent_session()
    say(session, "tell me the hours")
    session.reply_ready(1, PlaybackItem(turn_id=1))
    actions = session.speech(SpeechStarted(offset_ms=3000, detected_ms=3064), Silent(busy=True))
    assert s.InterruptPlayback("barge-in") in actions and s.CancelReply(1, "caller spoke again") in actions


def test_a_keypress_is_a_turn():
    session, _ = agent_session()
    dtmf = '{"event":"dtmf","streamSid":"%s","sequenceNumber":"4","dtmf":{"digit":"1"}}' % STREAM
    actions = session.receive(dtmf)
    assert of(actions, s.StartReply) == [s.StartReply(1, "", "1")]


def test_timings_are_ms_since_the_turn_started():
    session, clock = agent_session()
    say(session, "hello")
    clock.now += 0.25
    [announce] = session.agent_progress(1, StreamEvent.AGENT_FIRST_TOKEN, {})
    assert announce.data == {"turn_id": 1, "ms": 250.0}
    item = PlaybackItem(turn_id=1)
    session.reply_ready(1, item)
    clock.now += 0.2
    [first_audio] = session.playback_first_audio(item)
    assert first_audio.event is StreamEvent.AGENT_FIRST_AUDIO and first_audio.data == {"turn_id": 1, "ms": 450.0}
    assert session.agent_progress(7, StreamEvent.AGENT_FIRST_TOKEN, {}) == []  # not the current turn


def test_what_the_caller_heard_goes_into_the_history_and_the_transcript():
    session, _ = agent_session()
    say(session, "hello")
    item = PlaybackItem(text="We open at nine. We close at five.", turn_id=1)
    session.reply_ready(1, item)
    result = PlaybackResult(
        item.id, Outcome.INTERRUPTED, text=item.text, audio_seconds=1.2, heard_text="We open at nine.", heard_seconds=0.9, turn_id=1
    )
    session.speech(SpeechStarted(offset_ms=5000, detected_ms=5064), Silent(busy=True))  # the barge-in that cut it
    actions = session.playback_finished(item, result)
    assert s.ReplyHeard(1, "We open at nine.", audio_ms=900, interrupted=True) in actions
    [finished] = [a for a in of(actions, s.Announce) if a.event is StreamEvent.PLAYBACK_FINISHED]
    assert finished.transcript == s.TranscriptRow("agent", "We open at nine.", interrupted=True)


def test_a_reply_that_plays_to_the_end_finishes_the_turn():
    session, _ = agent_session()
    say(session, "hello")
    item = PlaybackItem(text="Hi there.", turn_id=1)
    session.reply_ready(1, item)
    assert session.reply_done(1, text="Hi there.", spoke=True, end_call=False) == []
    result = PlaybackResult(item.id, Outcome.PLAYED, text=item.text, audio_seconds=0.8, heard_text="Hi there.", turn_id=1)
    actions = session.playback_finished(item, result)
    [finished] = [a for a in of(actions, s.Announce) if a.event is StreamEvent.AGENT_REPLY_FINISHED]
    assert finished.data["heard_text"] == "Hi there." and finished.data["interrupted"] is False
    assert session.reply_turn is None


def test_end_call_closes_the_stream_after_the_goodbye_played():
    session, _ = agent_session()
    say(session, "goodbye")
    item = PlaybackItem(text="Goodbye!", turn_id=1)
    session.reply_ready(1, item)
    assert session.reply_done(1, text="Goodbye!", spoke=True, end_call=True) == []
    result = PlaybackResult(item.id, Outcome.PLAYED, text=item.text, audio_seconds=0.5, heard_text="Goodbye!", turn_id=1)
    actions = session.playback_finished(item, result)
    assert s.CloseSocket(CLOSES.AGENT_ENDED) in actions


def test_end_call_without_words_closes_at_once():
    session, _ = agent_session()
    say(session, "hang up")
    actions = session.reply_done(1, text="", spoke=False, end_call=True)
    assert s.CloseSocket(CLOSES.AGENT_ENDED) in actions


def test_a_failed_agent_ends_the_turn_and_says_why():
    session, _ = agent_session()
    say(session, "hello")
    [announce] = session.reply_failed(1, "HTTP 500 from the model")
    assert announce.event is StreamEvent.AGENT_REPLY_CANCELLED
    assert announce.data["reason"] == "agent error: HTTP 500 from the model"


def test_a_noise_that_cut_a_reply_off_gets_the_reply_again():
    session, _ = agent_session()
    say(session, "what time do you open")
    session.speech(SpeechStarted(offset_ms=2000, detected_ms=2064), Silent())  # a cough: the reply is fenced
    actions = session.speech(Final(""), Silent())  # ... and it had no words
    assert of(actions, s.StartReply) == [s.StartReply(2, resume=True)]


# --- the barge-in rule: backchannels may pass under a reply ----------------------------------------


def test_min_words_lets_a_backchannel_pass_and_stops_for_real_words():
    session, _ = agent_session(SessionConfig(barge_in_min_words=3))
    say(session, "tell me the hours")
    session.reply_ready(1, PlaybackItem(turn_id=1))
    playing = Silent(busy=True)
    actions = session.speech(SpeechStarted(offset_ms=3000, detected_ms=3064), playing)
    assert of(actions, s.InterruptPlayback) == [] and of(actions, s.CancelReply) == []
    actions = session.speech(Final("uh huh"), playing)
    assert of(actions, s.InterruptPlayback) == [] and of(actions, s.StartReply) == []  # not a turn
    assert session.reply_turn == 1
    session.speech(SpeechStarted(offset_ms=6000, detected_ms=6064), playing)
    actions = session.speech(Partial("no wait I said"), playing)
    assert s.InterruptPlayback("barge-in") in actions and s.CancelReply(1, "caller spoke again") in actions


def test_min_speech_time_interrupts_only_if_the_caller_keeps_talking():
    session, _ = agent_session(SessionConfig(barge_in_min_speech_seconds=0.4))
    say(session, "tell me the hours")
    session.reply_ready(1, PlaybackItem(turn_id=1))
    playing = Silent(busy=True)
    actions = session.speech(SpeechStarted(offset_ms=3000, detected_ms=3064), playing)
    assert actions[-1] == s.StartTimer(0.4, s.Timer.BARGE_IN)
    session.speech(SpeechEnded(offset_ms=3200, detected_ms=3700), playing)  # a cough: over before the timer
    assert session.barge_in_timer_fired(playing) == []
    session.speech(Final(""), playing)
    session.speech(SpeechStarted(offset_ms=8000, detected_ms=8064), playing)
    assert s.InterruptPlayback("barge-in") in session.barge_in_timer_fired(playing)


@pytest.mark.parametrize("words, speech", [(0, 0.0)])
def test_default_rule_interrupts_at_the_first_sign_of_speech(words, speech):
    session, _ = agent_session(SessionConfig(barge_in_min_words=words, barge_in_min_speech_seconds=speech))
    say(session, "hi")
    session.reply_ready(1, PlaybackItem(turn_id=1))
    actions = session.speech(SpeechStarted(offset_ms=0, detected_ms=64), Silent(busy=True))
    assert s.InterruptPlayback("barge-in") in actions
