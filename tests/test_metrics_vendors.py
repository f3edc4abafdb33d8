"""Vendor failures are counted: STT that cannot connect, TTS that cannot synthesize, an agent's model that fails.

In-process streams (the production consumer, PostgreSQL) whose three vendors
all point at a closed loopback port; the counts are read from this process's
registry (one process: prometheus_client's default registry, what /metrics serves).
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from voicecall.models import CallEvent

from .live import free_port
from .streams import live_stream, wait_for
from .support import mediastream_settings

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def _errors(vendor: str, backend: str) -> float:
    return REGISTRY.get_sample_value("mediastream_vendor_errors_total", {"vendor": vendor, "backend": backend}) or 0.0


def _event(call, type_: str):
    return CallEvent.objects.filter(call=call, type=type_).order_by("id").first()


async def test_stt_tts_and_agent_failures_are_counted_by_vendor():
    closed = free_port()  # bound and released: nothing listens there
    vendors = {
        "TRANSCRIPTION": {
            "BACKEND": "mediastream.transcription.openai.OpenAIRealtimeBackend",
            "OPTIONS": {"API_KEY": "sk-test", "URL": f"ws://127.0.0.1:{closed}/v1/realtime", "CONNECT_TIMEOUT": 3.0},
        },
        "TTS": {"BACKEND": "mediastream.tts.openai.OpenAIBackend", "OPTIONS": {"API_KEY": "sk-test", "BASE_URL": f"http://127.0.0.1:{closed}/v1"}},
        "AGENT": {"BACKEND": "mediastream.agents.openai.ChatCompletionsAgent", "OPTIONS": {"API_KEY": "sk-test", "BASE_URL": f"http://127.0.0.1:{closed}/v1"}},
        "STREAM_GREETING": "Hello.",
        "VAD": {"ENABLED": False},
    }
    before = {
        "stt": _errors("stt", "OpenAIRealtimeBackend"),
        "tts": _errors("tts", "OpenAIBackend"),
        "agent": _errors("agent", "ChatCompletionsAgent"),
    }
    with mediastream_settings(**vendors):
        async with live_stream() as (comm, call, stream_sid):
            failed = await wait_for(lambda: _event(call, "transcription.failed"), timeout=10)
            greeting = await wait_for(lambda: _event(call, "playback.finished"), timeout=10)
            await comm.send_to(
                text_data=json.dumps({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": "5", "dtmf": {"digit": "1"}})
            )
            cancelled = await wait_for(lambda: _event(call, "agent.reply.cancelled"), timeout=15)
    assert failed.payload["backend"] == "OpenAIRealtimeBackend"
    assert greeting.payload["outcome"] == "failed" and greeting.payload["error"].startswith("synthesis failed")
    assert cancelled.payload["reason"].startswith("agent error")
    assert _errors("stt", "OpenAIRealtimeBackend") == before["stt"] + 1
    assert _errors("tts", "OpenAIBackend") == before["tts"] + 1
    assert _errors("agent", "ChatCompletionsAgent") == before["agent"] + 1
