"""Any process reaches any call: commands go straight to the channel that holds the stream.

Two real daphne processes of one deployment (one PostgreSQL, one Redis layer
prefix). A call's stream is on process 1; its admin page on process 2 makes it
speak and its interrupt action cuts it off, and so does plain Django code in
this test process. A process killed with its call still registered answers
``NO_STREAM`` after the acknowledgement timeout, not after the caller's own
timeout; a call that hung up answers ``NO_STREAM`` without waiting at all.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import reverse

from mediastream import api
from mediastream.api import Outcome, ainterrupt, aspeak
from mediastream.directory import for_layer

from .live import CONSTANT_TTS
from .streams import hang_up, open_call

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def _staff_session() -> str:
    """A logged-in staff session in the shared database (any process of the deployment honours it)."""
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _admin(base: str, session: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, cookies={"sessionid": session}, timeout=10)
    return client


async def _csrf(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text[:500]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


async def test_a_call_on_one_process_takes_commands_from_another_and_from_plain_django_code(daphne):
    async with daphne.astart({"TTS": CONSTANT_TTS}, name="direct-1") as one:
        async with daphne.astart({"TTS": CONSTANT_TTS}, name="direct-2", prefix=one.prefix) as two:
            with override_settings(CHANNEL_LAYERS=one.channel_layers()):
                call, stream = await open_call(one)
                directory = for_layer(get_channel_layer())
                await wait_for_async(lambda: directory.lookup(call.call_sid))
                row = await database_sync_to_async(call_row)(call.call_sid)
                session = await sync_to_async(_staff_session)()

                # Process 2's admin "Say a line": speak() runs in process 2, the audio comes from process 1.
                async with await _admin(two.http, session) as admin:
                    say = reverse("admin:voicecall_call_say", args=[row.pk])
                    token = await _csrf(admin, say)
                    text = "Spoken on process one, asked for on process two. " * 4
                    posted = await admin.post(say, data={"csrfmiddlewaretoken": token, "text": text})
                    assert posted.status_code == 302, posted.text[:500]
                    await stream.next_event("media", timeout=10)

                    # Process 2's interrupt action: Twilio gets a clear on process 1's socket.
                    changelist = reverse("admin:voicecall_call_changelist")
                    token = await _csrf(admin, changelist)
                    action = {"csrfmiddlewaretoken": token, "action": "interrupt_calls", "_selected_action": str(row.pk)}
                    posted = await admin.post(changelist, data=action)
                    assert posted.status_code == 302, posted.text[:500]
                    await stream.next_event("clear", timeout=10)

                # Plain Django code in this process: a waited speak gets its outcome, an interrupt its count.
                result = await aspeak(call.call_sid, "And once from a script.", wait=True, timeout=20)
                assert result.outcome is Outcome.PLAYED, result
                assert await ainterrupt(call.call_sid, "script", wait=True) == 0  # nothing left playing

                ended = await hang_up(stream)
                assert ended.close_reason == "socket closed"
                assert await directory.lookup(call.call_sid) is None  # unregistered at teardown
                loop = asyncio.get_running_loop()
                started = loop.time()
                gone = await aspeak(call.call_sid, "Anyone?", wait=True, timeout=30)
                assert gone.outcome is Outcome.NO_STREAM
                assert loop.time() - started < api.ACK_TIMEOUT  # answered from the directory, no wait for an ack


async def test_a_call_whose_process_died_answers_no_stream_within_the_ack_timeout(daphne):
    async with daphne.astart({"TTS": CONSTANT_TTS}, name="direct-doomed") as doomed:
        with override_settings(CHANNEL_LAYERS=doomed.channel_layers()):
            call, stream = await open_call(doomed)
            directory = for_layer(get_channel_layer())
            await wait_for_async(lambda: directory.lookup(call.call_sid))
            doomed.proc.kill()  # no teardown: the key stays until it expires
            await asyncio.to_thread(doomed.proc.wait, 10)
            assert await directory.lookup(call.call_sid) is not None

            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await aspeak(call.call_sid, "Is anyone holding this call?", wait=True, timeout=60)
            waited = loop.time() - started
            assert result.outcome is Outcome.NO_STREAM, result
            assert waited < 20, waited  # the 2 s acknowledgement timeout, not the caller's 60 s
            assert await ainterrupt(call.call_sid, "anyone?", wait=True) is None
            await stream.close()


def call_row(call_sid: str):
    from voicecall.models import Call

    return Call.objects.get(call_sid=call_sid)


async def wait_for_async(probe, timeout: float = 10.0, interval: float = 0.01):
    """Until the coroutine ``probe()`` returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def test_a_full_stream_channel_raises_instead_of_dropping_the_command():
    """``channel_layer.send`` to the stream's channel: a consumer that stopped reading makes speak() raise ChannelFull."""
    from channels.exceptions import ChannelFull

    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 2}}}
    with override_settings(CHANNEL_LAYERS=layers):
        layer = get_channel_layer()
        stuck = await layer.new_channel()  # a stream's channel that nobody reads any more
        call_sid = "CA" + "5" * 32
        await for_layer(layer).register(call_sid, stuck, ttl=30)
        await aspeak(call_sid, "one")
        await ainterrupt(call_sid, "two")
        with pytest.raises(ChannelFull):
            await aspeak(call_sid, "three")
        assert (await layer.receive(stuck))["type"] == "playback.say"  # the first two are queued, in order
        assert (await layer.receive(stuck))["type"] == "playback.interrupt"
