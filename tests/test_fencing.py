"""A caller who speaks again before the agent answers never hears the stale reply.

The quick version of ``bench/fencing.py``: in-process streams (the production
consumer, PostgreSQL), the locmem transcription backend saying what the
caller said, ``ChatCompletionsAgent`` against a slow fake model (first token
300-800 ms after each request) and a TTS whose every frame says which turn's
reply it is. The caller interrupts each first reply while the model thinks or
while its first sentence is synthesized; the reply to the last turn of each
round plays.
"""

from __future__ import annotations

import pytest

from bench.fencing import run_fencing

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_no_frame_of_a_cancelled_reply_is_ever_sent():
    result = await run_fencing(5, calls=2, seed=7, max_seconds=120)
    assert result.problems == []
    assert result.turns >= 10 and result.cancelled >= 5
    # Both moments of interrupting were exercised, and none of those replies sent a frame.
    assert result.cancelled_thinking and result.cancelled_synthesizing
    assert result.stale_frames == 0, f"stale audio from turns {result.stale_turns}"
    # The replies that were not cancelled played, every one of them.
    assert result.answered == 5 and not result.answered_silent and result.answered_frames > 0
    # The agent closed the model's stream of every reply it cancelled while the model was writing.
    assert result.llm_aborted >= result.cancelled_thinking
