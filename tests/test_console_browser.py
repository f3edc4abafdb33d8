"""The live call console in a real browser: Debian's chromium (Playwright) on a real daphne.

A simulated call (``mediastream.simulator`` playing Twilio against the daphne,
Redis and PostgreSQL) runs while a support person's browser shows its admin
page. The caller's words come from a fake Deepgram in this process (the test
speaks for the vendor); the console must show them without a reload, partial
and final apart; "Say" must put audio on that call's stream and show the
outcome; "Interrupt" must send Twilio a ``clear``. The console's update delay
(the vendor's result sent -> the text on screen) is printed.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time

import pytest
from channels.db import database_sync_to_async

from voicecall.models import Call

from .browser import admin_login, chromium, requires_browser, seen_at, serve_static, watch_for_text
from .live import CONSTANT_TTS
from .streams import hang_up, open_call
from .vendors_stt.deepgram import FakeDeepgram

pytestmark = [requires_browser, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PASSWORD = "console-pw-123"
#: Lines measured for the console's update delay.
DELAY_SAMPLES = 10


class Tap:
    """What the server sent on the simulated stream: 20 ms frames with audio in them, clears."""

    def __init__(self) -> None:
        self.audio_frames = 0
        self.clears = 0

    def record(self, message: dict, at: float) -> None:
        audio = base64.b64decode(message["media"]["payload"]) if message.get("event") == "media" else b""
        if audio and set(audio) != {0xFF}:
            self.audio_frames += len(audio) // 160  # 20 ms frames (a message carries several)
        elif message.get("event") == "clear":
            self.clears += 1


@database_sync_to_async
def support_person() -> str:
    from django.contrib.auth.models import Permission
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("support", password=PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_call", "change_call"]))
    return user.get_username()


async def until(predicate, timeout: float = 10.0) -> None:
    """Wait (bounded) for ``predicate()``, checking every few milliseconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_the_console_follows_a_simulated_call_and_acts_on_it(daphne, capsys):
    async with FakeDeepgram() as deepgram:
        overrides = {
            "TTS": CONSTANT_TTS,
            "VAD": {"ENABLED": False},
            "TRANSCRIPTION": {
                "BACKEND": "mediastream.transcription.deepgram.DeepgramBackend",
                "OPTIONS": {"API_KEY": "dg-test-key", "URL": deepgram.url, "CONNECT_TIMEOUT": 5.0},
            },
        }
        username = await support_person()
        async with daphne.astart(overrides, name="daphne-console-browser") as live:
            tap = Tap()
            call, stream = await open_call(live, on_message=tap.record, timeout=10)
            await call.status("in-progress")  # answered: the duration ticks
            await deepgram.wait_connections(1, timeout=10)
            record = await database_sync_to_async(Call.objects.get)(call_sid=call.call_sid)

            async with chromium() as browser:
                await serve_static(browser)
                page = await browser.new_page()
                await admin_login(page, live.http, username, PASSWORD)
                await page.goto(f"{live.http}/admin/voicecall/call/{record.pk}/change/")
                console = page.locator("#call-console")
                await console.get_by_text("Connected: following the call live.").wait_for(timeout=10_000)
                loaded_url = page.url

                # The caller's words appear as they come: the partial apart from the final.
                await deepgram.results("I would like", is_final=False)
                partial = console.locator('[data-role="transcript"] li[data-kind="partial"]')
                await partial.get_by_text("I would like").wait_for(timeout=10_000)
                assert await partial.locator(".text").evaluate("node => getComputedStyle(node).fontStyle") == "italic"
                await deepgram.results("I would like a table for two", is_final=True, speech_final=True, duration=1.5)
                final = console.locator('[data-role="transcript"] li[data-kind="final"][data-speaker="caller"]')
                await final.get_by_text("I would like a table for two").wait_for(timeout=10_000)
                await partial.wait_for(state="detached", timeout=10_000)
                assert page.url == loaded_url, "no reload"

                # The call's status and its duration, ticking.
                assert "in-progress" in await console.locator('[data-role="status"]').inner_text()
                duration = console.locator('[data-role="duration"]')
                first = await duration.inner_text()
                await page.wait_for_function(
                    "([node, first]) => node.textContent !== first && node.textContent.endsWith('(live)')",
                    arg=[await duration.element_handle(), first],
                    timeout=5_000,
                )

                # "Say": audio on this call's stream, then the outcome.
                before = tap.audio_frames
                await console.get_by_label("Say", exact=True).fill("Your table is ready.")
                await console.get_by_role("button", name="Say", exact=True).click()
                said = console.locator('[data-role="say-result"]')
                await page.wait_for_function(
                    "node => node.dataset.outcome === 'played'", arg=await said.element_handle(), timeout=15_000
                )
                assert await said.inner_text() == "Played"
                assert tap.audio_frames - before >= 25, "the line's audio (about a second) reached the stream"
                agent = console.locator('[data-role="transcript"] li[data-speaker="agent"][data-kind="final"]')
                await agent.get_by_text("Your table is ready.").wait_for(timeout=10_000)

                # "Interrupt": a long line is cut off with a clear, and both results show.
                long_line = "This is a long announcement that keeps going. " * 6
                await console.get_by_label("Say", exact=True).fill(long_line)
                await console.get_by_label("Say", exact=True).press("Enter")  # says it; the admin's form stays put
                playing = console.locator('[data-role="playing"]')
                await playing.get_by_text("This is a long announcement").wait_for(timeout=10_000)
                started = tap.audio_frames
                await until(lambda: tap.audio_frames > started)
                await console.get_by_role("button", name="Interrupt").click()
                await console.locator('[data-role="action-result"]').get_by_text("Interrupted (1 cut off).").wait_for(
                    timeout=10_000
                )
                await until(lambda: tap.clears >= 1)
                await page.wait_for_function(
                    "node => node.dataset.outcome === 'interrupted'", arg=await said.element_handle(), timeout=10_000
                )
                # The interrupted line leaves "playing" when its playback.finished arrives (soon after the outcome).
                await page.wait_for_function(
                    "node => node.innerText.trim() === 'nothing'", arg=await playing.element_handle(), timeout=10_000
                )
                assert page.url == loaded_url, "Enter in the Say box did not submit the change form"

                # The console's update delay: the vendor's final sent -> its text on screen.
                delays = []
                for index in range(DELAY_SAMPLES):
                    text = f"measured line number {index}"
                    await watch_for_text(page, text, '[data-role="transcript"] li[data-kind="final"] .text', text)
                    sent = time.time()
                    await deepgram.results(text, is_final=True, speech_final=True, start=2.0 + index, duration=0.5)
                    delays.append((await seen_at(page, text) - sent) * 1000)
                with capsys.disabled():
                    print(
                        f"\nconsole update delay (Deepgram final sent -> text on screen), {DELAY_SAMPLES} lines: "
                        f"p50 {statistics.median(delays):.1f} ms, max {max(delays):.1f} ms"
                    )

                # The caller's audio, then the end of the stream: its counters, without a reload.
                await stream.stream_audio(b"\xff" * 160 * 50, realtime=False)
                await hang_up(stream)
                await console.locator('[data-role="frames-in"]').get_by_text("50", exact=True).wait_for(timeout=10_000)
                assert await console.locator('[data-role="sequence-gaps"]').inner_text() == "0"
                assert await console.locator('[data-role="stream"]').inner_text() == "ended"
                assert page.url == loaded_url
