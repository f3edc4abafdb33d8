"""The talk relay's pure parts: settings, the session table, client tools, audio conversion, the Realtime PCM16 option."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from mediastream.agents.base import CallContext, ToolCall
from mediastream.agents.openai_realtime import RealtimeAgent
from mediastream.talk.clienttools import ClientTools
from mediastream.talk.limits import SessionTable, TalkSettings, talk_settings
from mediastream.talk.pcm import ToMulaw, ToPcm24, seconds
from mediastream.talk.protocol import UNKNOWN_TOOL_CALL, RelayError
from mediastream.talk.voice import Playhead
from mediastream.tts.base import AudioChunk

from .support import mediastream_settings

KEY = "sk-test-key"
PCM24 = {"type": "audio/pcm", "rate": 24000}
LIMITS = TalkSettings(session_ttl_seconds=10, max_sessions_per_connection=2, max_sessions=3, max_audio_base64_bytes=100)


class Session:
    def __init__(self, id: str, connection_id: str, expires_at: float) -> None:
        self.id, self.connection_id, self.expires_at = id, connection_id, expires_at


def test_talk_settings_default_to_the_seeds_constants_and_merge_over_them():
    assert talk_settings() == TalkSettings(1800.0, 2, 64, 512 * 1024)
    with mediastream_settings(TALK={"MAX_SESSIONS": 5}):
        assert talk_settings() == TalkSettings(1800.0, 2, 5, 512 * 1024)


@pytest.mark.parametrize("bad", [{"MAX_SESSIONS": 0}, {"MAX_SESSIONS_PER_CONNECTION": 1.5}, {"SESSION_TTL_SECONDS": "30"}, {"MAX_AUDIO_BASE64_BYTES": True}])
def test_bad_talk_settings_are_named_by_a_system_check(bad):
    with mediastream_settings(TALK=bad):
        with pytest.raises(ImproperlyConfigured):
            talk_settings()
        errors = [e for e in run_checks() if e.id == "mediastream.E030"]
    assert len(errors) == 1 and str(next(iter(bad))) in errors[0].msg


def test_the_table_counts_per_connection_and_per_process_and_hides_other_connections_sessions():
    table: SessionTable[Session] = SessionTable()
    a1, a2, b1 = Session("a1", "A", 100), Session("a2", "A", 100), Session("b1", "B", 5)
    for session in (a1, a2):
        table.admit("A", LIMITS)
        table.add(session)
    with pytest.raises(RelayError, match="for this connection"):
        table.admit("A", LIMITS)
    table.admit("B", LIMITS)
    table.add(b1)
    with pytest.raises(RelayError) as full:
        table.admit("C", LIMITS)
    assert full.value.message == "Too many active realtime relay sessions"
    assert table.lookup("a1", "B", now=0) == (None, None)  # another connection's: unknown, and left alone
    assert table.lookup("a1", "A", now=0) == (a1, None)
    assert table.lookup("b1", "B", now=6) == (None, b1)  # expired: unknown, handed back to be closed
    assert table.expired(now=6) == [b1]
    assert table.discard(a1) and not table.discard(a1)
    assert table.owned_by("A") == [a2]


@pytest.mark.asyncio
async def test_client_tools_wait_for_the_final_result_and_refuse_unknown_calls():
    announced = []
    tools = ClientTools(lambda item_id, call: announced.append((item_id, call.id)))
    call = ToolCall("call-1", "get_location", {})
    running = asyncio.ensure_future(tools.run(call, CallContext("relay", "", 3)))
    await asyncio.sleep(0)
    assert announced == [("turn-3", "call-1")] and tools.waiting == ["call-1"]
    tools.submit("call-1", {"status": "working"}, will_continue=True)
    await asyncio.sleep(0)
    assert not running.done()
    tools.submit("call-1", {"lat": 1}, will_continue=False)
    assert await running == {"lat": 1}
    with pytest.raises(RelayError) as unknown:
        tools.submit("call-1", {}, will_continue=False)
    assert unknown.value.message == UNKNOWN_TOOL_CALL
    cancelled = asyncio.ensure_future(tools.run(ToolCall("call-2", "x", {}), CallContext("relay")))
    await asyncio.sleep(0)
    tools.cancel_all()
    with pytest.raises(asyncio.CancelledError):
        await cancelled


def test_the_playhead_adds_audio_after_what_is_still_playing():
    now = [100.0]
    playhead = Playhead(clock=lambda: now[0])
    playhead.sent(1.0)
    playhead.sent(0.5)
    assert playhead.remaining() == 1.5 and playhead.playing()
    now[0] = 102.0
    assert not playhead.playing()
    playhead.sent(0.2)  # after a pause, from now
    assert abs(playhead.remaining() - 0.2) < 1e-9


def test_audio_conversion_keeps_length_and_level_in_pieces():
    tone = (np.sin(2 * np.pi * 300 * np.arange(24000) / 24000) * 10000).astype("<i2").tobytes()
    down = ToMulaw()
    mulaw = b"".join(down.feed(tone[i : i + 1920]) for i in range(0, len(tone), 1920))
    # 1 s of 8 kHz mu-law, less what the streaming filter still holds (under 50 ms: the page keeps streaming).
    assert 8000 - 400 <= len(mulaw) <= 8000
    up = ToPcm24()
    pieces = [up.feed_chunk(AudioChunk(tone[i : i + 1001], "pcm_s16le", 24000)) for i in range(0, len(tone), 1001)]
    out = b"".join(pieces) + up.flush()
    assert out == tone  # 24 kHz in: passes through, odd cuts and all
    piper = (np.sin(2 * np.pi * 300 * np.arange(22050) / 22050) * 10000).astype("<i2").tobytes()
    out = up.feed_chunk(AudioChunk(piper, "pcm_s16le", 22050)) + up.flush()
    assert len(out) == 48000 and abs(seconds(out) - 1.0) < 1e-9
    level = np.abs(np.frombuffer(out, dtype="<i2")[2000:-2000]).max()
    assert 9000 < level < 11000


def test_pcm16_realtime_sessions_ask_for_24_khz_pcm_both_ways_and_phone_calls_keep_mulaw():
    agent = RealtimeAgent(API_KEY=KEY, BASE_URL="ws://127.0.0.1:1/v1/realtime")
    ga = agent.session_config([], "pcm16")["audio"]
    assert ga["input"]["format"] == PCM24 and ga["output"]["format"] == PCM24
    assert agent.session_config([])["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    beta = RealtimeAgent(API_KEY=KEY, BASE_URL="ws://127.0.0.1:1/v1/realtime", PROTOCOL="beta").session_config([], "pcm16")
    assert beta["input_audio_format"] == beta["output_audio_format"] == "pcm16"
    chosen = agent.with_options(voice="verse", model="gpt-realtime-mini", instructions="Be brief.")
    assert (chosen.voice, chosen.model, chosen.instructions) == ("verse", "gpt-realtime-mini", "Be brief.")
    assert chosen.url.endswith("?model=gpt-realtime-mini") and agent.url.endswith("?model=gpt-realtime")
    with pytest.raises(ValueError):
        agent.open_session(call=CallContext("relay"), audio_format="opus")
