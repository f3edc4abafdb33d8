"""Twilio webhooks end to end: signed like Twilio signs them, against the real database."""

import io
import logging
import threading
import xml.etree.ElementTree as ET
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.test import Client, override_settings
from django.utils import timezone
from twilio.request_validator import RequestValidator

from voicecall import replay, views
from voicecall.models import Call, CallEvent, CallStatus, MediaStream, WebhookReceipt
from voicecall.signals import call_started, call_status_changed
from voicecall.tokens import hash_stream_token

from .support import voicecall_overrides

AUTH_TOKEN = "test-auth-token-12345"
PUBLIC = "https://voice.example.com"
CALL_SID = "CA" + "1" * 32
ACCOUNT_SID = "AC" + "0" * 32
STREAM_URL = "wss://voice.example.com/twilio/media-stream/"

pytestmark = pytest.mark.django_db


def voice_params(**overrides):
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": CALL_SID,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15005550006",
        "To": "+14155551212",
        **overrides,
    }


def status_params(status, sequence, **overrides):
    return voice_params(
        CallStatus=status,
        SequenceNumber=str(sequence),
        CallbackSource="call-progress-events",
        Timestamp="Fri, 20 Aug 2010 01:13:42 +0000",
        **overrides,
    )


def stream_params(event, **overrides):
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": CALL_SID,
        "StreamSid": "MZ" + "2" * 32,
        "StreamName": "MZ" + "2" * 32,
        "StreamEvent": event,
        "Timestamp": "2026-01-01T00:00:00Z",
        **overrides,
    }


def post(client, path, params, *, signed_url=None, token=AUTH_TOKEN, signature=None, **extra):
    """POST form params to ``path`` signed the way Twilio signs (public URL + sorted params)."""
    if signature is None:
        signature = RequestValidator(token).compute_signature(signed_url or PUBLIC + path, params)
    if signature:
        extra["HTTP_X_TWILIO_SIGNATURE"] = signature
    return client.post(path, urlencode(params), content_type="application/x-www-form-urlencoded", **extra)


def parse_twiml(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    return root


def stream_token(root):
    (param,) = root.findall("./Connect/Stream/Parameter")
    assert param.get("name") == "token"
    return param.get("value")


# --- Voice webhook --------------------------------------------------------------------


def test_voice_webhook_records_call_and_answers_connect_stream():
    client = Client(enforce_csrf_checks=True)  # Twilio sends no CSRF token
    response = post(client, "/twilio/voice/", voice_params())

    root = parse_twiml(response)
    assert [child.tag for child in root] == ["Connect"]
    stream = root.find("./Connect/Stream")
    assert stream.get("url") == STREAM_URL
    assert "?" not in stream.get("url")
    assert stream.get("statusCallback") == "https://voice.example.com/twilio/stream-status/"
    assert stream.get("statusCallbackMethod") == "POST"
    token = stream_token(root)
    assert len(token) >= 32
    assert "no-store" in response["Cache-Control"]

    call = Call.objects.get(call_sid=CALL_SID)
    assert (call.account_sid, call.direction, call.from_number, call.to_number) == (
        ACCOUNT_SID,
        "inbound",
        "+15005550006",
        "+14155551212",
    )
    assert call.status == CallStatus.RINGING
    assert call.stream_token_hash == hash_stream_token(token)
    assert token not in call.stream_token_hash
    assert list(call.events.values_list("type", flat=True)) == ["twilio.call.voice"]


def test_voice_webhook_for_a_new_call_is_two_inserts_and_an_event(client, django_assert_num_queries, monkeypatch):
    """The first webhook of a call, 50 times a second in a ramp of calls: its receipt, the finished
    call row (status and token hash in the INSERT), the event, the stored answer; one transaction
    (here the test's savepoint), and a savepoint around each INSERT that may meet an existing row."""
    monkeypatch.setattr(replay, "PRUNE_EVERY", 10**9)  # the occasional pruning query is not this request's
    post(client, "/twilio/voice/", voice_params(CallSid="CA" + "9" * 32))  # the first request's one-time setup
    with django_assert_num_queries(10) as captured:
        response = post(client, "/twilio/voice/", voice_params())
    statements = [q["sql"] for q in captured.captured_queries]
    writes = [sql.split(" (")[0].split(" SET ")[0] for sql in statements if not sql.startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))]
    assert writes == [
        'INSERT INTO "voicecall_webhookreceipt"',
        'INSERT INTO "voicecall_call"',
        'INSERT INTO "voicecall_callevent"',
        'UPDATE "voicecall_webhookreceipt"',
    ]
    call = Call.objects.get(call_sid=CALL_SID)
    assert call.status == CallStatus.RINGING
    assert call.stream_token_hash == hash_stream_token(stream_token(parse_twiml(response)))


def test_voice_webhook_for_a_call_placed_earlier_updates_its_row(client):
    """A call whose row exists (placed through the REST API, or created by a status callback) is
    locked and updated, not inserted again: its placed-call fields stay."""
    placed = Call.objects.create(call_sid=CALL_SID, direction="outbound-api", to_number="+14155550100", status=CallStatus.QUEUED)
    response = post(client, "/twilio/voice/", voice_params(Direction="outbound-api"))
    call = Call.objects.get()
    assert call.pk == placed.pk
    assert (call.direction, call.to_number, call.from_number) == ("outbound-api", "+14155550100", "+15005550006")
    assert call.status == CallStatus.RINGING
    assert call.stream_token_hash == hash_stream_token(stream_token(parse_twiml(response)))
    assert list(call.events.values_list("type", flat=True)) == ["twilio.call.voice"]


@voicecall_overrides(GREETING="Hello, you are talking to a robot & friends.")
def test_greeting_is_said_before_the_stream(client):
    root = parse_twiml(post(client, "/twilio/voice/", voice_params()))
    assert [child.tag for child in root] == ["Say", "Connect"]
    assert root.find("Say").text == "Hello, you are talking to a robot & friends."


def test_each_new_voice_webhook_mints_a_new_token(client):
    first = stream_token(parse_twiml(post(client, "/twilio/voice/", voice_params())))
    second = stream_token(parse_twiml(post(client, "/twilio/voice/", voice_params(CallStatus="in-progress"))))
    assert first != second
    assert Call.objects.get().stream_token_hash == hash_stream_token(second)


def test_voice_webhook_for_an_ended_call_hangs_up_without_a_token(client):
    Call.objects.create(call_sid=CALL_SID, status=CallStatus.COMPLETED)
    root = parse_twiml(post(client, "/twilio/voice/", voice_params(CallStatus="in-progress")))
    assert [child.tag for child in root] == ["Hangup"]
    call = Call.objects.get()
    assert call.status == CallStatus.COMPLETED
    assert call.stream_token_hash == ""


def test_voice_webhook_without_call_sid_is_a_bad_request(client):
    response = post(client, "/twilio/voice/", {"From": "+15005550006"})
    assert response.status_code == 400
    assert not Call.objects.exists()


# --- Refusals: method, size, signature ---------------------------------------------------


def assert_nothing_written():
    assert not Call.objects.exists()
    assert not CallEvent.objects.exists()
    assert not WebhookReceipt.objects.exists()


@pytest.mark.parametrize("path", ["/twilio/voice/", "/twilio/status/", "/twilio/stream-status/"])
def test_get_is_405(client, path):
    response = client.get(path)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_missing_signature_is_403_with_one_log_line_and_nothing_written(client, caplog):
    caplog.set_level(logging.INFO)
    response = post(client, "/twilio/voice/", voice_params(), signature="")
    assert response.status_code == 403
    assert_nothing_written()
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1
    assert refusals[0].name == "voicecall.views"
    assert "missing X-Twilio-Signature header" in refusals[0].getMessage()


def test_refusal_log_line_is_sanitised(client, caplog):
    caplog.set_level(logging.WARNING)
    response = post(client, "/twilio/voice/?evil%0Akey=secret-value", voice_params(), signature="bogus")
    assert response.status_code == 403
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert "secret-value" not in message
    assert "evil key=..." in message


@pytest.mark.parametrize(
    "signed",
    [
        {"token": "some-other-token"},
        {"signed_url": "https://evil.example/twilio/voice/"},
        {"signed_url": "http://voice.example.com/twilio/voice/"},
        {"signed_url": PUBLIC + "/twilio/status/"},
        {"signed_url": PUBLIC + "/twilio/voice"},  # posted to the slashed path
    ],
    ids=["wrong-token", "other-host", "other-scheme", "other-path", "slash-less-url"],
)
def test_wrong_signature_is_403_and_nothing_written(client, signed):
    response = post(client, "/twilio/voice/", voice_params(), **signed)
    assert response.status_code == 403
    assert_nothing_written()


def test_tampered_param_is_403(client):
    validator = RequestValidator(AUTH_TOKEN)
    signature = validator.compute_signature(PUBLIC + "/twilio/status/", status_params("completed", 1))
    response = post(client, "/twilio/status/", status_params("in-progress", 1), signature=signature)
    assert response.status_code == 403
    assert_nothing_written()


@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/status", "/twilio/stream-status"])
def test_slash_less_paths_are_served_not_redirected(client, path):
    params = stream_params("stream-started") if "stream" in path else voice_params()
    response = post(client, path, params)  # signed for exactly the slash-less URL
    assert response.status_code == 200


@voicecall_overrides(MAX_WEBHOOK_BODY_BYTES=1024)
def test_oversize_body_is_413_and_nothing_written(client):
    response = post(client, "/twilio/voice/", voice_params(Padding="x" * 2000))
    assert response.status_code == 413
    assert_nothing_written()


@voicecall_overrides(MAX_WEBHOOK_BODY_BYTES=1024)
def test_oversize_body_without_content_length_is_413():
    """Under daphne a chunked body has no Content-Length; its actual size is checked."""
    body = urlencode(voice_params(Padding="x" * 2000)).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/twilio/voice/",
        "query_string": b"",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
    }
    response = views.voice(ASGIRequest(scope, io.BytesIO(body)))
    assert response.status_code == 413
    assert_nothing_written()


def test_declared_oversize_content_length_is_413(client):
    response = post(client, "/twilio/voice/", voice_params(), CONTENT_LENGTH=str(10 * 1024 * 1024))
    assert response.status_code == 413
    assert_nothing_written()


@voicecall_overrides(VALIDATE_SIGNATURES=False)
def test_unsigned_request_accepted_when_validation_is_off(client):
    response = post(client, "/twilio/voice/", voice_params(), signature="")
    assert stream_token(parse_twiml(response))
    assert Call.objects.filter(call_sid=CALL_SID).exists()


@voicecall_overrides(TWILIO_AUTH_TOKEN="")
def test_empty_auth_token_refuses_webhooks(client):
    response = post(client, "/twilio/voice/", voice_params(), token="")
    assert response.status_code == 403
    assert_nothing_written()


@override_settings(DEBUG=True)
def test_debug_does_not_disable_signature_checks(client):
    response = post(client, "/twilio/voice/", voice_params(), signature="")
    assert response.status_code == 403
    assert_nothing_written()


# --- Replays ------------------------------------------------------------------------------


def test_replayed_voice_webhook_changes_nothing_and_gets_the_same_answer(client):
    first = post(client, "/twilio/voice/", voice_params())
    token_hash = Call.objects.get().stream_token_hash
    second = post(client, "/twilio/voice/", voice_params())

    assert second.status_code == first.status_code == 200
    assert second["Content-Type"] == first["Content-Type"]
    assert second.content == first.content
    assert stream_token(parse_twiml(second)) == stream_token(parse_twiml(first))
    assert Call.objects.get().stream_token_hash == token_hash
    assert CallEvent.objects.count() == 1
    assert WebhookReceipt.objects.count() == 1


def test_stored_replay_response_is_encrypted(client):
    token = stream_token(parse_twiml(post(client, "/twilio/voice/", voice_params())))
    receipt = WebhookReceipt.objects.get()
    assert token not in receipt.body
    assert "Response" not in receipt.body


def test_replay_after_the_window_is_processed_again(client):
    first = stream_token(parse_twiml(post(client, "/twilio/voice/", voice_params())))
    WebhookReceipt.objects.update(created_at=timezone.now() - timedelta(seconds=601))
    second = stream_token(parse_twiml(post(client, "/twilio/voice/", voice_params())))
    assert second != first
    assert CallEvent.objects.count() == 2


def test_a_receipt_taken_over_after_the_window_starts_a_new_window(client):
    post(client, "/twilio/voice/", voice_params())
    WebhookReceipt.objects.update(created_at=timezone.now() - timedelta(seconds=601))
    second = stream_token(parse_twiml(post(client, "/twilio/voice/", voice_params())))
    third = stream_token(parse_twiml(post(client, "/twilio/voice/", voice_params())))  # a replay of the second
    assert third == second
    assert WebhookReceipt.objects.count() == 1
    assert CallEvent.objects.count() == 2


def test_replay_with_undecryptable_receipt_is_handled_again(client):
    # SECRET_KEY changed (or differs between processes): the stored answer is
    # unreadable, and empty TwiML would hang up the call, so it is answered afresh.
    post(client, "/twilio/voice/", voice_params())
    with override_settings(SECRET_KEY="a-different-secret-key-0123456789abcdefghijkl"):
        response = post(client, "/twilio/voice/", voice_params())
        again = post(client, "/twilio/voice/", voice_params())
    token = stream_token(parse_twiml(response))
    assert Call.objects.get().stream_token_hash == hash_stream_token(token)
    assert stream_token(parse_twiml(again)) == token  # and replays under the new key read the new receipt


def test_replayed_status_callback_records_one_event(client):
    for _ in range(2):
        assert post(client, "/twilio/status/", status_params("in-progress", 2)).status_code == 200
    assert CallEvent.objects.filter(type="twilio.call.status").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_webhooks_apply_once():
    """Two processes receiving the same signed request: one mints the token, both answer the same."""
    barrier = threading.Barrier(2)
    responses = []

    def deliver():
        try:
            barrier.wait()
            responses.append(post(Client(), "/twilio/voice/", voice_params()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].content == responses[1].content
    assert CallEvent.objects.count() == 1
    assert Call.objects.get().stream_token_hash == hash_stream_token(stream_token(parse_twiml(responses[0])))


# --- Call status callbacks ------------------------------------------------------------------


def test_status_callback_for_unknown_call_creates_it_and_answers_empty_twiml(client):
    root = parse_twiml(post(client, "/twilio/status/", status_params("in-progress", 1)))
    assert len(root) == 0
    call = Call.objects.get(call_sid=CALL_SID)
    assert call.status == CallStatus.IN_PROGRESS
    assert call.answered_at is not None
    assert call.last_sequence_number == 1
    assert call.from_number == "+15005550006"
    event = call.events.get()
    assert event.type == "twilio.call.status"
    assert event.payload["CallStatus"] == "in-progress"
    assert event.payload["applied"] is True


def test_out_of_order_status_callbacks_keep_the_latest(client):
    post(client, "/twilio/status/", status_params("in-progress", 3))
    post(client, "/twilio/status/", status_params("ringing", 2))
    post(client, "/twilio/status/", status_params("ringing", 3, StirStatus="A"))  # equal number
    call = Call.objects.get()
    assert call.status == CallStatus.IN_PROGRESS
    assert call.last_sequence_number == 3
    assert [e.payload["applied"] for e in call.events.all()] == [True, False, False]


def test_terminal_status_ends_call_and_open_streams(client):
    post(client, "/twilio/voice/", voice_params())
    call = Call.objects.get()
    open_stream = MediaStream.objects.create(call=call, stream_sid="MZopen")
    earlier = timezone.now() - timedelta(minutes=5)
    closed_stream = MediaStream.objects.create(
        call=call, stream_sid="MZclosed", stopped_at=earlier, close_reason="socket closed"
    )

    post(client, "/twilio/status/", status_params("completed", 4, CallDuration="42"))

    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED
    assert call.ended_at is not None
    assert call.duration == 42
    assert call.stream_token_hash == ""  # no new stream may start on an ended call
    open_stream.refresh_from_db()
    assert open_stream.stopped_at is not None
    assert open_stream.close_reason == "call ended"
    closed_stream.refresh_from_db()
    assert (closed_stream.stopped_at, closed_stream.close_reason) == (earlier, "socket closed")


def test_terminal_status_never_reverts(client):
    post(client, "/twilio/status/", status_params("completed", 3, CallDuration="10"))
    post(client, "/twilio/status/", status_params("in-progress", 4))
    post(client, "/twilio/voice/", voice_params(CallStatus="in-progress"))
    call = Call.objects.get()
    assert call.status == CallStatus.COMPLETED
    assert call.last_sequence_number == 3
    assert call.duration == 10


def test_voice_webhook_does_not_move_status_backwards(client):
    post(client, "/twilio/status/", status_params("in-progress", 2))
    post(client, "/twilio/voice/", voice_params(CallStatus="ringing"))
    assert Call.objects.get().status == CallStatus.IN_PROGRESS


def test_late_sequenced_callback_does_not_undo_an_answered_call(client):
    # The voice webhook (no SequenceNumber) answered the call; a ringing callback arrives late.
    post(client, "/twilio/voice/", voice_params(CallStatus="in-progress"))
    post(client, "/twilio/status/", status_params("ringing", 1))
    call = Call.objects.get()
    assert call.status == CallStatus.IN_PROGRESS
    assert call.last_sequence_number == 1
    post(client, "/twilio/status/", status_params("completed", 2, CallDuration="5"))
    assert Call.objects.get().status == CallStatus.COMPLETED


def test_status_signals_are_sent_after_commit(client, django_capture_on_commit_callbacks):
    received = []

    def on_status(sender, call, status, previous_status, **kwargs):
        received.append((sender, call.call_sid, status, previous_status))

    def on_started(sender, call, **kwargs):
        received.append((sender, call.call_sid, "started"))

    call_status_changed.connect(on_status)
    call_started.connect(on_started)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            post(client, "/twilio/voice/", voice_params())
        with django_capture_on_commit_callbacks(execute=True):
            post(client, "/twilio/status/", status_params("completed", 5))
        with django_capture_on_commit_callbacks(execute=True):
            post(client, "/twilio/status/", status_params("in-progress", 6))  # ignored: no signal
    finally:
        call_status_changed.disconnect(on_status)
        call_started.disconnect(on_started)
    assert received == [
        (Call, CALL_SID, "ringing", None),
        (Call, CALL_SID, "started"),
        (Call, CALL_SID, "completed", "ringing"),
    ]


# --- Stream status callbacks ----------------------------------------------------------------


def test_stream_status_events_are_recorded(client):
    call = Call.objects.create(call_sid=CALL_SID, status=CallStatus.IN_PROGRESS)
    stream = MediaStream.objects.create(call=call, stream_sid="MZ" + "2" * 32)

    for event in ("stream-started", "stream-stopped"):
        assert len(parse_twiml(post(client, "/twilio/stream-status/", stream_params(event)))) == 0
    post(client, "/twilio/stream-status/", stream_params("stream-error", StreamError="boom\r\nfake: line"))

    events = list(call.events.all())
    assert [e.type for e in events] == ["twilio.stream.started", "twilio.stream.stopped", "twilio.stream.error"]
    assert all(e.stream == stream for e in events)
    assert events[0].payload["StreamSid"] == stream.stream_sid
    assert events[2].payload["StreamError"] == "boom fake: line"


def test_stream_status_for_unknown_call_writes_nothing(client, caplog):
    caplog.set_level(logging.WARNING)
    response = post(client, "/twilio/stream-status/", stream_params("stream-started"))
    assert response.status_code == 200
    assert not Call.objects.exists()
    assert not CallEvent.objects.exists()
    assert "unknown call" in caplog.text


def test_webhook_for_another_account_is_refused(client):
    response = post(client, "/twilio/voice/", voice_params(AccountSid="AC" + "9" * 32))
    assert response.status_code == 403
    assert not Call.objects.exists()
