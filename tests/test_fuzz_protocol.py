"""Fuzzing the Twilio frame parser: whatever arrives, a message or a RemoteProtocolError (pure, no I/O)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediastream.protocol import parse_message

from .fuzzing import check_frame, deep_frames, frames, twilio_messages

FUZZ = settings(max_examples=800, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(frames)
def test_any_frame_parses_or_is_a_protocol_error(frame):
    check_frame(frame)


@settings(FUZZ, max_examples=150)
@given(twilio_messages)
def test_twilio_like_objects_parse_or_are_refused_and_starts_are_storable(message):
    check_frame(json.dumps(message))
    check_frame(json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@settings(FUZZ, max_examples=100)
@given(deep_frames)
def test_nesting_at_any_depth_is_at_worst_malformed(frame):
    assert check_frame(frame) in {"malformed", "unknown_event"}


def test_the_reported_frames():
    assert check_frame("[" * 30000) == "malformed"
    start = '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","mediaFormat":{"encoding":"\\ud800"}}}'
    assert check_frame(start) == "invalid"
    assert check_frame(start.replace("\\ud800", "audio/x-mulaw")) == "Start"
    assert parse_message(start.replace("\\ud800", "audio/x-mulaw")).media_format == {"encoding": "audio/x-mulaw"}


@settings(FUZZ, max_examples=150)
@given(st.binary(max_size=256))
def test_binary_frames_never_escape_the_error_type(data):
    check_frame(data)
