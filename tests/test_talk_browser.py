"""The talk page in a real browser: Debian's chromium with a WAV file as its microphone.

A staff user signs in to the admin, opens the talk page and presses Talk; the
fake microphone speaks a Piper-synthesized question. The page must show the
user's words and the agent's answer, and play audible reply audio (its
``window.talkStats`` counts every PCM sample it scheduled). The voice is the
default one: no ``MEDIASTREAM["AGENT"]``, so the embedded demo agent through
the embedded Whisper and Piper.
"""

from __future__ import annotations

import math

import pytest
from channels.db import database_sync_to_async

from mediastream.agents import demo

from .browser import admin_login, chromium, requires_browser, serve_static
from .support import requires_speech
from .talk_client import relay_server, speech_wav_24k

pytestmark = [requires_browser, requires_speech, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SPEECH = {
    "TTS": {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}},
    "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}},
}
QUESTION = "What are your opening hours?"
PASSWORD = "talk-page-pw-123"
#: Whisper, Piper and chromium share two cores with the rest of the suite.
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def live(daphne):
    with relay_server(daphne, SPEECH, name="talk-browser") as server:
        yield server


@database_sync_to_async
def staff_user() -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("talker", password=PASSWORD, is_staff=True)


async def test_a_spoken_question_shows_both_transcripts_and_plays_the_answer(live, tmp_path):
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    await staff_user()
    microphone = tmp_path / "question.wav"
    speech_wav_24k(QUESTION, microphone, lead_ms=1000, tail_ms=5000)
    flags = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}%noloop",  # once: a looping file would ask again
    ]
    async with chromium(flags) as context:
        await context.grant_permissions(["microphone"], origin=live.http)
        await serve_static(context)
        page = await context.new_page()
        await admin_login(page, live.http, "talker", PASSWORD)
        await page.goto(f"{live.http}/admin/talk/")
        await page.get_by_role("button", name="Talk").click()
        answered = page.wait_for_function(
            """(answer) => {
                const finals = window.talkStats.finals;
                const asked = finals.findIndex((f) => f.role === "user" && /hours/i.test(f.text));
                return asked >= 0 && finals.slice(asked).some((f) => f.role === "assistant" && f.text === answer);
            }""",
            arg=demo.HOURS,
            timeout=TIMEOUT_MS,
        )
        try:
            await answered
        except PlaywrightTimeout:
            stats = await page.evaluate("() => window.talkStats")
            pytest.fail(f"no answer on the page: {stats}, log: {await page.locator('#talk-log').inner_text()}")
        user_lines = await page.locator("#talk-transcript .talk-user:not(.talk-partial)").all_inner_texts()
        assert any("hours" in line.lower() for line in user_lines)
        agent_lines = await page.locator("#talk-transcript .talk-assistant:not(.talk-partial)").all_inner_texts()
        assert f"Agent: {demo.HOURS}" in agent_lines
        stats = await page.evaluate("() => window.talkStats")
        assert stats["framesSent"] > 25  # over a second of microphone went to the relay
        assert stats["audioEvents"] > 0 and stats["scheduledSeconds"] > 2.0
        rms = math.sqrt(stats["sumSquares"] / stats["audioSamples"])
        assert stats["peak"] > 0.1 and rms > 0.01  # speech, not silence
        assert not stats["errors"]
        await page.get_by_role("button", name="Stop").click()
        await page.wait_for_function("() => window.talkStats.closed !== null", timeout=10_000)
        assert await page.locator("#talk-status").inner_text() == "The session ended."
        assert await page.get_by_role("button", name="Talk").is_enabled()
