"""Fuzzing the stream session: random frames, timers, admission answers, speech, commands and outcomes (pure).

The driver (tests/fuzzing.py) delivers events only when the consumer could:
commands once the stream joined its call's group, speech and player reports
once its parts are open, an eviction only through the admission registry.
"""

import pytest
from hypothesis import HealthCheck, given, settings

from mediastream import session as s
from mediastream.admission import AdmissionRegistry
from mediastream.closing import CLOSES
from mediastream.db import Admitted
from mediastream.speech_in import SpeechStarted

from . import streams
from .fuzzing import CALL, STREAM, check_session, handshake_scope, session_steps
from .session_support import Silent

FUZZ = settings(max_examples=800, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(session_steps)
def test_any_sequence_of_events_keeps_the_session_contract(case):
    check_session(case, strict=True)


# Found by the fuzzer with check_session(case, strict=True): once a close is decided on a
# streaming session, a Say command queued playback (the waiting speak() heard "queued", then
# "interrupted" at teardown, instead of "no_stream"), and caller speech or an Interrupt command
# interrupted playback (a clear that is never sent).


def _closing_stream(close_by: str) -> s.StreamSession:
    session = s.StreamSession("conn-1", AdmissionRegistry(), s.SessionConfig())
    session.connect(handshake_scope(True))
    session.receive(streams.start(CALL, STREAM, "tok"))
    session.admission_done(Admitted(call_id=1, stream_id=2, call_sid=CALL, stream_sid=STREAM))
    session.stream_opened(finals_expected=True)
    if close_by == "backpressure":
        assert session.audio_sent(10**9) == [s.CloseSocket(CLOSES.BACKPRESSURE)]
    else:
        assert session.receive(streams.stop(CALL, STREAM)) == [s.CloseSocket(CLOSES.STOPPED)]
    return session


def test_a_say_on_a_closing_stream_answers_no_stream():
    session = _closing_stream("backpressure")
    actions = session.command({"type": "playback.say", "item_id": "say-1", "text": "Hello", "reply_to": "r!1"})
    assert not [a for a in actions if isinstance(a, s.Play)], actions


def test_caller_speech_on_a_stopped_stream_interrupts_nothing():
    session = _closing_stream("stop")
    actions = session.speech(SpeechStarted(offset_ms=100, detected_ms=164), Silent(busy=True))
    assert not [a for a in actions if isinstance(a, s.InterruptPlayback)], actions


def test_long_text_with_lone_surrogates_is_measured_not_a_crash():
    session = _closing_stream("stop")
    assert session.receive("\ud800" * 20000) == []  # under the byte limit as UTF-8 with surrogates passed: malformed JSON


def test_an_interrupt_command_on_a_closing_stream_interrupts_nothing():
    session = _closing_stream("backpressure")
    actions = session.command({"type": "playback.interrupt", "reason": "operator"})
    assert not [a for a in actions if isinstance(a, s.InterruptPlayback)], actions
