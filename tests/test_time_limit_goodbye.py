"""At the time limit, a live stream says the goodbye itself; without one, Twilio's line ends the call."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from mediastream.receivers import say_goodbye_at_the_time_limit
from voicecall.models import Call

from .streams import live_stream, make_call
from .test_agent_calls import Twilio
from .support import mediastream_settings

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

TTS = {"BACKEND": "mediastream.tts.dummy.ConstantBackend", "OPTIONS": {"VALUE": 3000, "SAMPLE_RATE": 8000, "MS_PER_CHAR": 2, "MIN_MS": 100}}


async def test_the_stream_says_goodbye_and_waits_for_it_to_play():
    with mediastream_settings(TTS=TTS, TIME_LIMIT_GOODBYE="Time is up. Goodbye."):
        async with live_stream() as (comm, call, stream_sid):
            twilio = Twilio(comm, stream_sid)
            said = await sync_to_async(say_goodbye_at_the_time_limit)(sender=Call, call=call, limit_seconds=60)
            await twilio.stop()
            assert said is True
            assert twilio.frames > 0


async def test_without_a_live_stream_twilio_says_it():
    call, _token = await make_call()
    assert await sync_to_async(say_goodbye_at_the_time_limit)(sender=Call, call=call, limit_seconds=60) is False
