"""Twilio webhooks against hostile but validly signed input: replays in disguise, out-of-range numbers, odd text.

Each request here is signed with the account's auth token, as someone who
holds it (or who saw one signed request) can send it.
"""

import base64
import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.http import QueryDict
from django.test import Client
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from voicecall import views
from voicecall.models import Call, CallEvent, CallStatus, MediaStream, WebhookReceipt
from voicecall.records import MAX_INTEGER, parse_int, parse_timestamp
from voicecall.replay import replay_key
from voicecall.tokens import hash_stream_token
from voicecall.twilio_auth import signed_material

from .test_webhooks import AUTH_TOKEN, CALL_SID, PUBLIC, parse_twiml, post, status_params, stream_token, voice_params

pytestmark = pytest.mark.django_db

VOICE = "/twilio/voice/"


def signed_post(client, path, body: str, signature_params, **extra):
    """POST the raw form ``body`` with the signature Twilio computes for ``signature_params``."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, signature_params)
    return client.post(
        path, body, content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature, **extra
    )


def live_stream_for(call_sid=CALL_SID) -> MediaStream:
    """What an admitted stream leaves in the database: a row not stopped."""
    return MediaStream.objects.create(stream_sid="MZ" + "9" * 32, call=Call.objects.get(call_sid=call_sid))


# --- the replay key covers what the signature covers ------------------------------------------


def test_a_duplicated_pair_is_the_same_request(client):
    params = voice_params()
    first = post(client, VOICE, params)
    doubled = urlencode(params) + "&" + urlencode({"CallStatus": params["CallStatus"]})
    second = signed_post(client, VOICE, doubled, params)  # the validator de-duplicates values
    assert second.status_code == 200
    assert stream_token(parse_twiml(second)) == stream_token(parse_twiml(first))
    assert CallEvent.objects.count() == 1
    assert WebhookReceipt.objects.count() == 1


def test_a_pair_split_at_another_place_is_the_same_request(client):
    params = voice_params()
    first = post(client, VOICE, params)
    # "To" is the last name in sorted order: To=+14155551212 and To+1=4155551212 hash alike.
    shifted = {name: value for name, value in params.items() if name != "To"}
    shifted["To+1"] = params["To"][2:]
    assert signed_material(PUBLIC + VOICE, shifted) == signed_material(PUBLIC + VOICE, params)
    second = signed_post(client, VOICE, urlencode(shifted), params)
    assert second.status_code == 200
    assert stream_token(parse_twiml(second)) == stream_token(parse_twiml(first))
    assert CallEvent.objects.count() == 1


_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6)
_values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_names, _values), max_size=8))
def test_signed_material_is_what_twilio_signs(pairs):
    form = QueryDict(mutable=True)
    for name, value in pairs:
        form.appendlist(name, value)
    url = PUBLIC + VOICE
    validator = RequestValidator(AUTH_TOKEN)
    # The HMAC of signed_material is Twilio's signature, so equal material means an equal signature.
    mac = hmac.new(AUTH_TOKEN.encode(), signed_material(url, form).encode(), hashlib.sha1).digest()
    assert base64.b64encode(mac).decode() == validator.compute_signature(url, form)
    assert replay_key(url, form) == hashlib.sha256(signed_material(url, form).encode()).hexdigest()


def test_a_json_body_is_covered_by_its_hash_in_the_url():
    url = PUBLIC + "/twilio/status/?bodySHA256=abc"
    assert signed_material(url, '{"a": 1}') == url
    assert replay_key(url, '{"a": 1}') == replay_key(url, '{"a": 1}')


# --- a call with a live stream never gets a new token -----------------------------------------------


def test_replay_after_the_window_of_a_call_with_a_live_stream_mints_no_token(client, caplog):
    first = post(client, VOICE, voice_params())
    live_stream_for()
    token_hash = Call.objects.get().stream_token_hash
    WebhookReceipt.objects.update(created_at=timezone.now() - timedelta(seconds=601))
    with caplog.at_level(logging.WARNING, logger="voicecall.views"):
        replay = post(client, VOICE, voice_params())
    root = parse_twiml(replay)
    assert not root.findall(".//Parameter")  # no token for whoever replayed
    assert [child.tag for child in root] == ["Pause", "Redirect"]
    assert root.find("Redirect").text == f"{PUBLIC}{VOICE}?stream_retry=1"
    assert root.find("Redirect").get("method") == "POST"
    assert Call.objects.get().stream_token_hash == token_hash
    assert stream_token(parse_twiml(first))  # the first answer had one
    assert [r.getMessage() for r in caplog.records if "is live" in r.getMessage()] == [
        f"Voice webhook for call {CALL_SID} while its stream {'MZ' + '9' * 32} is live (a replay, or a redirect "
        "racing the stream's stop): no new token, retry 1"
    ]


def test_a_redirect_that_raced_the_stream_stop_gets_a_stream_once_the_stop_is_recorded(client):
    post(client, VOICE, voice_params())
    stream = live_stream_for()
    retry = parse_twiml(post(client, VOICE, voice_params(CallStatus="in-progress")))
    url = retry.find("Redirect").text
    assert url == f"{PUBLIC}{VOICE}?stream_retry=1"
    # Twilio follows the redirect, signing the URL with its query.
    again = parse_twiml(post(client, VOICE + "?stream_retry=1", voice_params(CallStatus="in-progress"), signed_url=url))
    assert again.find("Redirect").text == f"{PUBLIC}{VOICE}?stream_retry=2"
    stream.stopped_at = timezone.now()
    stream.save()
    path = VOICE + "?stream_retry=2"
    answer = parse_twiml(post(client, path, voice_params(CallStatus="in-progress"), signed_url=PUBLIC + path))
    token = stream_token(answer)
    assert Call.objects.get().stream_token_hash == hash_stream_token(token)


def test_a_stream_still_live_after_the_retries_hangs_up(client):
    post(client, VOICE, voice_params())
    live_stream_for()
    path = f"{VOICE}?stream_retry={views.LIVE_STREAM_RETRIES}"
    root = parse_twiml(post(client, path, voice_params(CallStatus="in-progress"), signed_url=PUBLIC + path))
    assert [child.tag for child in root] == ["Hangup"]
    assert not root.findall(".//Parameter")


# --- numbers and text Twilio would never send, signed anyway -------------------------------------


@pytest.mark.parametrize("field", ["SequenceNumber", "CallDuration"])
@pytest.mark.parametrize("value", [str(2**31), str(2**63), "9" * 20, "²", "١٢"])
def test_out_of_range_numbers_are_absent_not_a_500(client, field, value):
    params = status_params("completed", 5, CallDuration="42")
    params[field] = value
    response = post(client, "/twilio/status/", params)
    assert response.status_code == 200
    call = Call.objects.get()
    assert call.status == CallStatus.COMPLETED  # applied by the status order alone
    if field == "SequenceNumber":
        assert call.last_sequence_number is None
    else:
        assert call.duration is None


def test_parse_int_takes_ascii_decimals_up_to_the_integer_column():
    assert parse_int(str(MAX_INTEGER)) == MAX_INTEGER
    assert parse_int(str(MAX_INTEGER + 1)) is None
    assert parse_int("12", maximum=10) is None
    assert [parse_int(v) for v in ("", "-1", "1.5", " 7 ", "0x10", "²")] == [None, None, None, 7, None, None]


@pytest.mark.parametrize(
    "value",
    ["Fri, 31 Dec 9999 23:59:59 -0500", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-05:00", "Fri, 20 Aug 2010 01:13:42 +9999"],
)
def test_timestamps_outside_what_can_be_stored_are_absent(client, value):
    assert parse_timestamp(value) is None
    params = status_params("in-progress", 1)
    params["Timestamp"] = value
    response = post(client, "/twilio/status/", params)
    assert response.status_code == 200
    call = Call.objects.get()
    assert call.status == CallStatus.IN_PROGRESS and call.answered_at is not None


def test_nul_characters_in_names_and_values_are_stored_without_them(client):
    params = voice_params(**{"Caller\x00Name": "Jane\x00Doe", "From": "+1500\x005550006"})
    response = post(client, VOICE, params)
    assert response.status_code == 200
    call = Call.objects.get()
    assert call.from_number == "+15005550006"
    assert CallEvent.objects.get().payload["CallerName"] == "JaneDoe"


def test_stream_error_text_is_stored_sanitised(client):
    post(client, VOICE, voice_params())
    params = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": CALL_SID,
        "StreamSid": "MZ\x00" + "2" * 32,
        "StreamEvent": "stream-error",
        "StreamError": "bad\x00\nthing " + "x" * 2000,
        "Timestamp": "2026-01-01T00:00:00Z",
    }
    assert post(client, "/twilio/stream-status/", params).status_code == 200
    event = CallEvent.objects.get(type="twilio.stream.error")
    assert "\x00" not in event.payload["StreamError"] and len(event.payload["StreamError"]) <= 503


# --- forms Django refuses to parse ---------------------------------------------------------------------


def test_over_the_field_limit_is_413_with_one_log_line(client, caplog, settings):
    params = voice_params(**{f"Extra{i}": "x" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS)})
    with caplog.at_level(logging.INFO):
        response = post(client, VOICE, params)
    assert response.status_code == 413
    assert response.content == b"Too many form fields"
    assert [(r.name, r.levelname, r.exc_info) for r in caplog.records] == [("voicecall.views", "WARNING", None)]
    assert not Call.objects.exists() and not WebhookReceipt.objects.exists()


def test_over_the_field_limit_in_the_query_is_413(client):
    query = "&".join(f"q{i}=1" for i in range(1001))
    response = post(client, f"{VOICE}?{query}", voice_params())
    assert response.status_code == 413


def test_a_non_utf8_form_charset_is_400_with_one_log_line(caplog):
    params = voice_params()
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + VOICE, params)
    content_type = "application/x-www-form-urlencoded; charset=latin-1"
    with caplog.at_level(logging.INFO):
        response = Client().post(VOICE, urlencode(params), content_type=content_type, HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 400
    assert [(r.name, r.levelname, r.exc_info) for r in caplog.records] == [("voicecall.views", "WARNING", None)]
    assert not Call.objects.exists()


def test_retry_twiml_is_well_formed():
    from voicecall.twiml import retry_twiml

    root = ET.fromstring(retry_twiml("https://voice.example.com/twilio/voice/?stream_retry=1&x=<y>"))
    assert root.find("Pause").get("length") == "1"
    assert root.find("Redirect").text.endswith("x=<y>")
