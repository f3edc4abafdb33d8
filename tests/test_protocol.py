"""The Twilio wire format, with Twilio's documented examples as test vectors."""

import base64
import json

import pytest

from mediastream.protocol import (
    Connected,
    Dtmf,
    InvalidMessage,
    RemoteProtocolError,
    MalformedMessage,
    Mark,
    Media,
    Start,
    Stop,
    UnknownEvent,
    clear_message,
    mark_message,
    media_message,
    parse_message,
)

SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"


def test_connected():
    assert parse_message('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected("Call", "1.0.0")


def test_start_documented_example():
    msg = parse_message(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                    "streamSid": SID,
                    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
                },
                "streamSid": SID,
            }
        )
    )
    assert isinstance(msg, Start)
    assert msg.sequence_number == 1
    assert msg.call_sid == "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    assert msg.tracks == ("inbound",)
    assert msg.media_format["sampleRate"] == 8000
    assert msg.custom_parameters == {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}


def test_media_numbers_parsed_and_payload_decoded():
    payload = base64.b64encode(b"\xff" * 160).decode()
    assert payload == "/" * 212 + "/w=="
    msg = parse_message(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "4",
                "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": payload},
                "streamSid": SID,
            }
        )
    )
    assert msg == Media(sequence_number=4, stream_sid=SID, track="inbound", chunk=2, timestamp=5, payload=b"\xff" * 160)


def test_base64url_payload_is_accepted():
    raw = bytes([0xFB, 0xFF, 0xBF])
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    assert "-" in urlsafe or "_" in urlsafe
    msg = parse_message(json.dumps({"event": "media", "media": {"payload": urlsafe}, "streamSid": SID}))
    assert msg.payload == raw


def test_dtmf_mark_stop():
    assert parse_message(
        json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}})
    ) == Dtmf(5, SID, "1", "inbound_track")
    assert parse_message(
        json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}})
    ) == Mark(4, SID, "my label")
    stop = parse_message(
        json.dumps({"event": "stop", "sequenceNumber": "5", "stop": {"accountSid": "AC1", "callSid": "CA1"}, "streamSid": SID})
    )
    assert stop == Stop(5, SID, "CA1", "AC1")


@pytest.mark.parametrize(
    "text,error",
    [
        ("{not json", MalformedMessage),
        ("[1,2]", MalformedMessage),
        (b"\xff\xfe", MalformedMessage),
        ('{"event":"play"}', UnknownEvent),
        ('{"no":"event"}', UnknownEvent),
        ('{"event":"media","media":{"payload":"no+JhoaJjpz..."}}', InvalidMessage),  # Twilio's abbreviated example
        ('{"event":"media","media":{"payload":"%%%"}}', InvalidMessage),
        ('{"event":"media","sequenceNumber":"x","media":{"payload":""}}', InvalidMessage),
        ('{"event":"media"}', InvalidMessage),
        ('{"event":"start","start":{}}', InvalidMessage),
        ('{"event":"dtmf","dtmf":{}}', InvalidMessage),
        ('{"event":"mark","mark":{"name":""}}', InvalidMessage),
    ],
)
def test_bad_input_raises_a_remote_protocol_error(text, error):
    with pytest.raises(error):
        parse_message(text)


def test_malformed_json_error_keeps_its_cause():
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message("{oops")
    assert str(excinfo.value) == "Twilio media stream message was malformed JSON"
    assert isinstance(excinfo.value.__cause__, json.JSONDecodeError)


def test_outbound_messages_match_twilio_documented_shapes():
    sid = "MZ" + "0" * 32
    media = media_message(sid, b"\xff" * 160)
    assert json.loads(media) == {"event": "media", "streamSid": sid, "media": {"payload": "/" * 212 + "/w=="}}
    assert json.loads(mark_message(SID, "my label")) == {"event": "mark", "streamSid": SID, "mark": {"name": "my label"}}
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}


@pytest.mark.parametrize(
    "message",
    [
        {"event": "media", "sequenceNumber": "²", "media": {"payload": ""}},  # a digit, but not ASCII
        {"event": "media", "sequenceNumber": "9" * 5000, "media": {"payload": ""}},  # past int()'s limit
        {"event": "start", "streamSid": "MZ1\n2026-01-01 CRITICAL forged line", "start": {"callSid": "CA1"}},
        {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA\x00"}},
        {"event": "start", "streamSid": "MZ" + "a" * 100, "start": {"callSid": "CA1"}},
        {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "1; DROP TABLE"}},
        {"event": "stop", "stop": ["not", "an", "object"]},
        {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", "customParameters": {"a": {"b": 1}}}},
    ],
)
def test_hostile_fields_are_refused_as_protocol_errors(message):
    with pytest.raises(RemoteProtocolError):
        parse_message(json.dumps(message))
