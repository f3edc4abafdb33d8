"""A text agent behind the relay: the embedded Whisper hears spoken questions, Piper speaks the answers.

daphne runs the real offline speech (the speech extra) with a scripted agent;
the client sends Piper-spoken questions as PCM16 24 kHz, as the page does.
"""

from __future__ import annotations

import numpy as np
import pytest

from mediastream.agents import demo

from .support import requires_speech
from .talk_client import RelayClient, RelayRefused, decoded_audio, relay_server, session_cookie, speech_pcm

pytestmark = [requires_speech, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

STORY = " ".join(f"This is sentence number {n} of a very long story about the restaurant." for n in range(1, 13))
CLIENT_TOOL = {
    "name": "get_screen_size",
    "description": "The size of the user's screen.",
    "parameters": {"type": "object", "properties": {}},
    "client": True,
}
AGENT = {
    "BACKEND": "mediastream.agents.scripted.ScriptedAgent",
    "OPTIONS": {
        "GREETING": "",
        "INTENTS": [
            {"keywords": ["goodbye", "bye"], "before": "Thanks for calling. Goodbye!", "tool": {"name": "end_call"}},
            {
                "keywords": ["screen"],
                "before": "Let me look at your screen.",
                "tool": {"name": "get_screen_size"},
                "reply": "Your screen is {width} pixels wide.",
            },
            {"keywords": ["story"], "reply": STORY},
            {"keywords": ["hours", "open", "opening"], "reply": demo.HOURS},
        ],
        "TOOLS": [CLIENT_TOOL, "mediastream.agents.builtin_tools.end_call"],
    },
}
SPEECH = {
    "TTS": {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}},
    "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}},
}
#: Whisper and Piper share two cores with the rest of the suite: generous bounds, never sleeps.
SPEECH_TIMEOUT = 60


@pytest.fixture(scope="module")
def live(daphne):
    with relay_server(daphne, {**SPEECH, "AGENT": AGENT}, name="talk-cascade") as server:
        yield server


@pytest.fixture
def cookie():
    return session_cookie("staff")


async def start(live, cookie) -> tuple[RelayClient, str]:
    client = await RelayClient.open(live, cookie)
    created = await client.create(instructions="Answer briefly.")
    assert created["provider"] == "cascade"
    session = created["relaySessionId"]
    await client.wait_event(lambda e: e["type"] == "ready", timeout=SPEECH_TIMEOUT)
    return client, session


async def ask(client: RelayClient, session: str, question: str) -> int:
    """Speak ``question`` to the relay; the index of the first event after it was sent."""
    pcm, _ = speech_pcm(question)
    await client.send_pcm(session, pcm)
    return len(client.events)


def finals(client: RelayClient, role: str, after: int = 0) -> list[str]:
    return [e["text"] for e in client.events[after:] if e["type"] == "transcript" and e["role"] == role and e["final"]]


async def test_a_spoken_question_gets_a_transcript_and_a_spoken_answer(live, cookie):
    client, session = await start(live, cookie)
    try:
        await ask(client, session, "What are your opening hours?")
        heard = await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "user" and e["final"], timeout=SPEECH_TIMEOUT)
        assert "hours" in heard["text"].lower()
        await client.wait_event(lambda e: e["type"] == "mark", timeout=SPEECH_TIMEOUT)
        assert finals(client, "assistant") == [demo.HOURS]
        samples = decoded_audio(client.of(session)).astype(np.float64)
        assert len(samples) > 24000  # over a second of speech
        assert np.sqrt(np.mean(samples**2)) > 300  # audible, not silence
    finally:
        await client.close()


async def test_cancel_mid_reply_stops_the_audio_and_clears_the_browser(live, cookie):
    client, session = await start(live, cookie)
    try:
        await ask(client, session, "Tell me a story.")
        await client.wait_event(lambda e: e["type"] == "audio", timeout=SPEECH_TIMEOUT)
        assert await client.call("cancel", {"relaySessionId": session, "reason": "barge-in"}) == {"ok": True}
        clear = await client.wait_event(lambda e: e["type"] == "clear")
        cleared_at = client.events.index(clear)
        told = await client.wait_event(lambda e: e["type"] == "transcript" and e["role"] == "assistant" and e["final"])
        assert STORY.startswith(told["text"]) and told["text"] != STORY  # the line ends where the reply was cut
        # Later audio would be the cancelled story's: ask again and check nothing came between.
        after = await ask(client, session, "What are your opening hours?")
        await client.wait_event(lambda e: e["type"] == "mark", after=after, timeout=SPEECH_TIMEOUT)
        between = client.events[cleared_at:after]
        assert not [e for e in between if e["type"] == "audio"]
        assert finals(client, "assistant", after) == [demo.HOURS]
    finally:
        await client.close()


async def test_speaking_over_the_reply_interrupts_it(live, cookie):
    client, session = await start(live, cookie)
    try:
        await ask(client, session, "Tell me a story.")
        await client.wait_event(lambda e: e["type"] == "audio", timeout=SPEECH_TIMEOUT)
        after = await ask(client, session, "What are your opening hours?")
        clear = await client.wait_event(lambda e: e["type"] == "clear", timeout=SPEECH_TIMEOUT)
        await client.wait_event(lambda e: e["type"] == "mark", after=client.events.index(clear), timeout=SPEECH_TIMEOUT)
        assert finals(client, "assistant", after)[-1] == demo.HOURS
    finally:
        await client.close()


async def test_a_client_tool_runs_in_the_browser_and_the_agent_speaks_its_result(live, cookie):
    client, session = await start(live, cookie)
    try:
        await ask(client, session, "How big is my screen?")
        call = await client.wait_event(lambda e: e["type"] == "toolCall", timeout=SPEECH_TIMEOUT)
        assert call["name"] == "get_screen_size" and call["args"] == {}
        await client.call("toolResult", {"relaySessionId": session, "callId": call["callId"], "result": {"width": 1920}})
        await client.wait_event(lambda e: e["type"] == "mark", timeout=SPEECH_TIMEOUT)
        assert finals(client, "assistant") == ["Let me look at your screen. Your screen is 1920 pixels wide."]
        with pytest.raises(RelayRefused):
            await client.call("toolResult", {"relaySessionId": session, "callId": call["callId"], "result": {}})
    finally:
        await client.close()


async def test_saying_goodbye_ends_the_session_after_the_goodbye(live, cookie):
    client, session = await start(live, cookie)
    try:
        await ask(client, session, "Thank you, goodbye.")
        closed = await client.wait_event(lambda e: e["type"] == "close", timeout=SPEECH_TIMEOUT)
        assert closed["reason"] == "completed"
        assert finals(client, "assistant") == ["Thanks for calling. Goodbye!"]
        assert client.of(session, "audio")
    finally:
        await client.close()
