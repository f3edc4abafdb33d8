"""The live call console's WebSocket: who may open it, what it shows, what its controls do.

In-process sockets (``settings.asgi.application`` through WebsocketCommunicator,
the in-memory channel layer, PostgreSQL) with a real logged-in session cookie;
the handshake refusals once more against a real daphne (403 on the wire).
Streams are the production consumer playing Twilio's side by hand
(:func:`tests.streams.live_stream`); hang-up and transfer go to the local fake
of Twilio's REST API.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client

from mediastream.console.consumer import CLOSE_UNKNOWN_CALL, NOT_ALLOWED_TO_ACT
from mediastream.console.routing import console_path
from mediastream.groups import events_group
from mediastream.messages import EventMessage
from voicecall import control
from voicecall.events import ControlEvent
from voicecall.models import Call, CallEvent, CallStatus, MediaStream

from .control_support import FROM, TO, fake_twilio
from .streams import live_stream, make_call, mark, wait_for
from .support import mediastream_settings

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # the twilio library's aiohttp calls
]

ORIGIN = "http://127.0.0.1:8000"


# --- users and sockets --------------------------------------------------------------------------


def _user(name: str, *, staff: bool = True, perms: tuple[str, ...] = ()):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(name, password="pw", is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="voicecall"))
    return user


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@database_sync_to_async
def login(name: str, *, staff: bool = True, perms: tuple[str, ...] = ()) -> str:
    """A user with those permissions, logged in: the session cookie's value."""
    return _session_cookie(_user(name, staff=staff, perms=perms))


def viewer() -> str:
    return login("viewer", perms=("view_call",))


def changer() -> str:
    return login("changer", perms=("view_call", "change_call"))


def console(call_sid: str, cookie: str | None, *, origin: str = ORIGIN) -> WebsocketCommunicator:
    from settings.asgi import application

    headers = [(b"origin", origin.encode())]
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    comm = WebsocketCommunicator(application, console_path(call_sid), headers=headers)
    comm.scope["client"] = ["127.0.0.1", 50000]
    return comm


async def open_console(call_sid: str, cookie: str) -> tuple[WebsocketCommunicator, dict]:
    """An accepted console socket and its first message, the snapshot."""
    comm = console(call_sid, cookie)
    connected, _ = await comm.connect()
    assert connected
    snapshot = await comm.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    return comm, snapshot


async def next_of(comm: WebsocketCommunicator, predicate, timeout: float = 5.0) -> dict:
    """The next message from the console that ``predicate`` accepts (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await comm.receive_json_from(timeout=max(0.01, deadline - loop.time()))
        if predicate(message):
            return message


def event_named(name: str):
    return lambda message: message["type"] == "event" and message["event"]["event"] == name


def reply_to(request_id: int):
    return lambda message: message["type"] == "reply" and message["id"] == request_id


class TwilioSide:
    """Reads what the server sends on a live stream: counts media, records clears, echoes marks."""

    def __init__(self, comm, stream_sid: str) -> None:
        self.comm, self.stream_sid = comm, stream_sid
        self.media = 0
        self.clears = 0
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        seq = 100
        while True:
            output = await self.comm.receive_output(30)
            if output["type"] != "websocket.send":
                return
            message = json.loads(output["text"])
            if message["event"] == "media":
                audio = base64.b64decode(message["media"]["payload"])
                assert audio and len(audio) % 160 == 0  # whole 20 ms frames
                self.media += len(audio) // 160
            elif message["event"] == "clear":
                self.clears += 1
            elif message["event"] == "mark":
                seq += 1
                await self.comm.send_to(text_data=mark(self.stream_sid, message["mark"]["name"], seq=seq))
            self.changed.set()

    async def wait(self, predicate, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def dtmf(stream_sid: str, digit: str, seq: int) -> str:
    return json.dumps({"event": "dtmf", "sequenceNumber": str(seq), "streamSid": stream_sid, "dtmf": {"track": "inbound_track", "digit": digit}})


# --- who may open it ------------------------------------------------------------------------------


async def test_anonymous_is_refused_before_accept():
    call, _ = await make_call()
    connected, _ = await console(call.call_sid, None).connect()
    assert not connected


@pytest.mark.parametrize(
    "who",
    [
        {"staff": True, "perms": ()},  # staff, but no call permission
        {"staff": False, "perms": ("view_call", "change_call")},  # permissions, but not staff
    ],
    ids=["staff-without-permission", "permission-without-staff"],
)
async def test_unprivileged_users_are_refused_before_accept(who):
    call, _ = await make_call()
    cookie = await login("someone", **who)
    connected, _ = await console(call.call_sid, cookie).connect()
    assert not connected


async def test_a_page_of_another_origin_cannot_use_the_staff_session():
    call, _ = await make_call()
    cookie = await changer()
    connected, _ = await console(call.call_sid, cookie, origin="https://evil.example.com").connect()
    assert not connected


async def test_an_unknown_call_is_answered_with_an_error_and_4404():
    comm = console("CA" + "0" * 32, await viewer())
    connected, _ = await comm.connect()
    assert connected
    assert await comm.receive_json_from(timeout=5) == {"type": "error", "error": "There is no call with this CallSid."}
    assert (await comm.receive_output(5))["code"] == CLOSE_UNKNOWN_CALL


async def test_refusals_are_403_at_the_handshake_of_a_real_server(daphne):
    call, _ = await make_call(status=CallStatus.IN_PROGRESS)
    nobody = await login("nobody", perms=())
    watcher = await viewer()
    async with daphne.astart(name="daphne-console") as live:
        url = f"ws://127.0.0.1:{live.port}{console_path(call.call_sid)}"
        origin = f"http://127.0.0.1:{live.port}"
        for cookie in (None, nobody):
            headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"} if cookie else {}
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(url, origin=origin, additional_headers=headers, open_timeout=10):
                    pass
            assert refused.value.response.status_code == 403
        headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={watcher}"}
        async with websockets.connect(url, origin=origin, additional_headers=headers, open_timeout=10) as ws:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snapshot["type"] == "snapshot" and snapshot["call"]["call_sid"] == call.call_sid
            assert snapshot["can_act"] is False


# --- watching -----------------------------------------------------------------------------------


async def test_a_viewer_watches_live_events_but_cannot_act():
    async with live_stream() as (stream, call, stream_sid):
        comm, snapshot = await open_console(call.call_sid, await viewer())
        try:
            assert snapshot["can_act"] is False
            assert snapshot["call"]["streams"][0]["stream_sid"] == stream_sid
            assert snapshot["call"]["streams"][0]["live"] is True
            assert snapshot["events"][0]["event"] == "stream.started"
            assert snapshot["events"][0]["stream_sid"] == stream_sid

            await stream.send_to(text_data=dtmf(stream_sid, "7", seq=3))
            pressed = await next_of(comm, event_named("dtmf"))
            assert pressed["event"]["data"] == {"digit": "7"} and pressed["event"]["stream_sid"] == stream_sid

            for request_id, request in enumerate(
                [{"action": "say", "text": "hello"}, {"action": "interrupt"}, {"action": "hang_up"},
                 {"action": "transfer", "to": "+14155550100"}],
                start=1,
            ):
                await comm.send_json_to({"id": request_id, **request})
                reply = await next_of(comm, reply_to(request_id))
                assert reply == {"type": "reply", "id": request_id, "ok": False, "error": NOT_ALLOWED_TO_ACT}
            assert await stream.receive_nothing(0.3), "nothing was said on the stream"
        finally:
            await comm.disconnect()


async def test_partial_transcripts_reach_the_console_though_they_are_not_recorded():
    call, _ = await make_call()
    comm, _ = await open_console(call.call_sid, await viewer())
    try:
        layer = get_channel_layer()
        partial = EventMessage("transcript.partial", call.call_sid, "MZ" + "1" * 32, {"text": "I would like"})
        await layer.group_send(events_group(call.call_sid), partial.to_message())
        message = await next_of(comm, event_named("transcript.partial"))
        assert message["event"]["data"] == {"text": "I would like"} and message["event"]["id"] is None
    finally:
        await comm.disconnect()


async def test_the_console_catches_up_from_the_event_log_after_a_reconnect():
    async with live_stream() as (stream, call, stream_sid):
        cookie = await viewer()
        first, _ = await open_console(call.call_sid, cookie)
        await stream.send_to(text_data=dtmf(stream_sid, "1", seq=3))
        await next_of(first, event_named("dtmf"))
        await first.disconnect()

        # While no console is open: a key and a line, both in the event log.
        await stream.send_to(text_data=dtmf(stream_sid, "2", seq=4))
        await wait_for(lambda: CallEvent.objects.filter(call=call, type="dtmf").count() == 2)

        second, snapshot = await open_console(call.call_sid, cookie)
        try:
            digits = [event["data"]["digit"] for event in snapshot["events"] if event["event"] == "dtmf"]
            assert digits == ["1", "2"]
            ids = [event["id"] for event in snapshot["events"]]
            assert ids == sorted(ids) and None not in ids
            await stream.send_to(text_data=dtmf(stream_sid, "3", seq=5))
            live = await next_of(second, event_named("dtmf"))
            assert live["event"]["data"] == {"digit": "3"}
        finally:
            await second.disconnect()


async def test_an_event_both_in_the_snapshot_and_broadcast_after_it_is_shown_once():
    """The announcer writes a row, then broadcasts: a console opened in between gets both."""
    call, _ = await make_call()
    stream_sid = "MZ" + "2" * 32
    stream = await database_sync_to_async(MediaStream.objects.create)(call=call, stream_sid=stream_sid)
    await database_sync_to_async(CallEvent.objects.create)(call=call, stream=stream, type="dtmf", payload={"digit": "5"})
    comm, snapshot = await open_console(call.call_sid, await viewer())
    try:
        assert [event["data"] for event in snapshot["events"]] == [{"digit": "5"}]
        layer = get_channel_layer()
        for digit in ("5", "6"):  # the late broadcast of the row above, then a new key
            await layer.group_send(
                events_group(call.call_sid), EventMessage("dtmf", call.call_sid, stream_sid, {"digit": digit}).to_message()
            )
        message = await next_of(comm, event_named("dtmf"))
        assert message["event"]["data"] == {"digit": "6"}, "the repeat of the snapshot's row was dropped"
    finally:
        await comm.disconnect()


async def test_status_changes_and_unbroadcast_rows_arrive_by_the_poll():
    with mediastream_settings(CONSOLE={"POLL_SECONDS": 0.05}):
        call, _ = await make_call(status=CallStatus.RINGING)
        comm, snapshot = await open_console(call.call_sid, await viewer())
        try:
            assert snapshot["call"]["status"] == "ringing"
            await database_sync_to_async(Call.objects.filter(pk=call.pk).update)(status=CallStatus.COMPLETED)
            await database_sync_to_async(CallEvent.objects.create)(
                call=call, type="twilio.call.status", payload={"CallStatus": "completed"}
            )
            changed = await next_of(comm, lambda message: message["type"] == "call")
            assert changed["call"]["status"] == "completed" and changed["call"]["terminal"] is True
            row = await next_of(comm, event_named("twilio.call.status"))
            assert row["event"]["data"] == {"CallStatus": "completed"} and row["event"]["id"]
            assert await comm.receive_nothing(0.3), "each row once, though the poll reads it again"
        finally:
            await comm.disconnect()


# --- acting ------------------------------------------------------------------------------------


async def test_say_puts_audio_on_the_stream_and_answers_with_the_outcome():
    with mediastream_settings(CONSOLE={"POLL_SECONDS": 0.05}):
        async with live_stream() as (stream, call, stream_sid):
            twilio = TwilioSide(stream, stream_sid)
            comm, snapshot = await open_console(call.call_sid, await changer())
            try:
                assert snapshot["can_act"] is True
                await comm.send_json_to({"id": 1, "action": "say", "text": "One moment please."})
                queued = await next_of(comm, event_named("playback.queued"))  # a row no stream broadcasts
                assert queued["event"]["data"]["text"] == "One moment please."
                reply = await next_of(comm, reply_to(1), timeout=15)
                assert reply["ok"] is True and reply["result"]["outcome"] == "played"
                assert reply["result"]["text"] == "One moment please."
                assert twilio.media >= 10
            finally:
                await comm.disconnect()
                await twilio.stop()


async def test_interrupt_clears_the_stream_and_the_line_is_reported_interrupted():
    async with live_stream() as (stream, call, stream_sid):
        twilio = TwilioSide(stream, stream_sid)
        comm, _ = await open_console(call.call_sid, await changer())
        try:
            await comm.send_json_to({"id": 1, "action": "say", "text": "A long line. " * 20})
            await next_of(comm, event_named("playback.started"))
            await twilio.wait(lambda: twilio.media > 0)
            await comm.send_json_to({"id": 2, "action": "interrupt"})
            interrupted = await next_of(comm, reply_to(2))
            assert interrupted["result"] == {"count": 1, "live": True}
            await twilio.wait(lambda: twilio.clears == 1)
            said = await next_of(comm, reply_to(1))
            assert said["result"]["outcome"] == "interrupted"
        finally:
            await comm.disconnect()
            await twilio.stop()


async def test_say_without_a_live_stream_says_so():
    call, _ = await make_call()
    comm, _ = await open_console(call.call_sid, await changer())
    try:
        await comm.send_json_to({"id": 1, "action": "say", "text": "Anyone there?"})
        reply = await next_of(comm, reply_to(1))
        assert reply["ok"] is True and reply["result"]["outcome"] == "no_stream"
        await comm.send_json_to({"id": 2, "action": "interrupt"})
        assert (await next_of(comm, reply_to(2)))["result"] == {"count": 0, "live": False}
    finally:
        await comm.disconnect()


async def test_hang_up_and_transfer_go_through_twilios_api():
    with fake_twilio() as fake:
        call = await sync_to_async(control.place_call)(TO, FROM)
        comm, _ = await open_console(call.call_sid, await changer())
        try:
            await comm.send_json_to({"id": 1, "action": "transfer", "to": "reception"})
            refused = await next_of(comm, reply_to(1))
            assert refused["ok"] is False and "Enter an E.164 number" in refused["error"]
            assert fake.requests_to(f"/Calls/{call.call_sid}.json") == []
            await comm.send_json_to({"id": 5, "action": "transfer", "to": "+14155550100"})
            queued = await next_of(comm, reply_to(5), timeout=15)  # Twilio refuses: nothing to transfer yet
            assert queued["ok"] is False and "Twilio error 21220" in queued["error"] and "not connected yet" in queued["error"]
            fake.calls[call.call_sid].status = "in-progress"
            await comm.send_json_to({"id": 2, "action": "transfer", "to": "+14155550100"})
            assert (await next_of(comm, reply_to(2), timeout=15))["result"]["to"] == "+14155550100"
            await comm.send_json_to({"id": 3, "action": "hang_up"})
            hung_up = await next_of(comm, reply_to(3), timeout=15)
            assert hung_up["ok"] is True and hung_up["result"]["status"]
            updates = fake.requests_to(f"/Calls/{call.call_sid}.json")[1:]  # after the refused one
            assert "Twiml" in updates[0].form and updates[1].form == {"Status": ["completed"]}
            kinds = await database_sync_to_async(
                lambda: list(CallEvent.objects.filter(call=call, type__startswith="control.").values_list("type", flat=True))
            )()
            assert ControlEvent.TRANSFERRED in kinds and ControlEvent.HUNG_UP in kinds
        finally:
            await comm.disconnect()


async def test_a_permission_revoked_mid_session_counts_at_the_next_action():
    call, _ = await make_call()
    comm, snapshot = await open_console(call.call_sid, await changer())
    try:
        assert snapshot["can_act"] is True
        await database_sync_to_async(
            lambda: Permission.objects.get(codename="change_call").user_set.clear()
        )()
        await comm.send_json_to({"id": 1, "action": "interrupt"})
        assert (await next_of(comm, reply_to(1)))["error"] == NOT_ALLOWED_TO_ACT
    finally:
        await comm.disconnect()


@pytest.mark.parametrize(
    "frame, request_id, error",
    [
        ("not json", None, "Not JSON"),
        ("[1, 2]", None, "Not a JSON object"),
        ('{"id": "x", "action": "say"}', None, '"id" must be an integer'),
        ('{"id": 5, "action": "explode"}', 5, "Unknown action"),
        ('{"id": 6, "action": "say", "text": 42}', 6, '"text" must be a string'),
        ('{"id": 7, "action": "say", "text": "   "}', 7, "Type what to say first."),
        (json.dumps({"id": 8, "action": "say", "text": "x" * 20_000}), None, "too large"),
    ],
)
async def test_bad_requests_get_a_clear_answer_and_the_socket_stays_open(frame, request_id, error):
    call, _ = await make_call()
    comm, _ = await open_console(call.call_sid, await changer())
    try:
        await comm.send_to(text_data=frame)
        reply = await next_of(comm, lambda message: message["type"] == "reply")
        assert reply["ok"] is False and reply["id"] == request_id and error in reply["error"]
        still = EventMessage("dtmf", call.call_sid, "MZ" + "3" * 32, {"digit": "4"})  # still serving
        await get_channel_layer().group_send(events_group(call.call_sid), still.to_message())
        assert (await next_of(comm, event_named("dtmf")))["event"]["data"] == {"digit": "4"}
    finally:
        await comm.disconnect()


# --- a waiting speak() in a process that runs consumers (the console's own process) --------------------


async def test_a_waiting_speak_gets_its_outcome_in_a_process_whose_consumers_are_receiving():
    """Regression: with channels_redis, a reply channel of its own prefix waited out a consumer's blocking read.

    The console runs ``aspeak(wait=True)`` inside daphne, where consumers always
    have a receive pending on the same layer; the acknowledgement then came too
    late (after ``ACK_TIMEOUT``) and the line was reported as said on no stream.
    """
    from channels_redis.core import RedisChannelLayer
    from django.test import override_settings

    from mediastream.api import aspeak
    from mediastream.directory import for_layer
    from mediastream.messages import Queued, Result
    from mediastream.playback.player import Outcome, PlaybackResult

    from .settings import TEST_REDIS_URL

    config = {"hosts": [{"address": TEST_REDIS_URL, "socket_timeout": None}], "prefix": f"consolereg{id(object())}"}
    layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}}
    call_sid = "CA" + "4" * 32
    with override_settings(CHANNEL_LAYERS=layers):
        here = get_channel_layer()  # this process: a consumer's channel, always receiving
        consumer_channel = await here.new_channel()
        consumer = asyncio.create_task(here.receive(consumer_channel))
        stream_process = RedisChannelLayer(**config)  # the process holding the call's stream
        stream_channel = await stream_process.new_channel()
        await for_layer(stream_process).register(call_sid, stream_channel, ttl=30)

        async def hold_the_stream() -> None:
            say = await stream_process.receive(stream_channel)
            await stream_process.send(say["reply_to"], Queued(say["item_id"], "MZ" + "4" * 32).to_message())
            played = PlaybackResult(say["item_id"], Outcome.PLAYED, text=say["text"], audio_seconds=0.5)
            await stream_process.send(say["reply_to"], Result(played).to_message())

        holder = asyncio.create_task(hold_the_stream())
        try:
            await asyncio.sleep(0.05)  # the consumer's read is blocking in Redis
            result = await aspeak(call_sid, "Are you there?", wait=True, timeout=5)
            assert result.outcome is Outcome.PLAYED, result
            await holder
        finally:
            for task in (consumer, holder):
                task.cancel()
            await asyncio.gather(consumer, holder, return_exceptions=True)
            await for_layer(stream_process).unregister(call_sid, stream_channel)
            await stream_process.close_pools()
            await here.close_pools()
