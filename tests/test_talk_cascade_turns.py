"""The cascade's turns, in process: a new turn cuts the reply it interrupts, and neither spoils the other.

The test plays the transcription provider (the locmem backend) to say exactly
when a user's turn ends; the agent is the scripted one, the TTS a dummy.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_asyncio

from mediastream.agents.base import CallContext, ToolCall
from mediastream.agents.scripted import ScriptedAgent
from mediastream.backends import backends
from mediastream.talk.cascade import INTERRUPTED_TOOL_OUTPUT, CascadeVoice
from mediastream.talk.protocol import CreateParams
from mediastream.transcription.locmem import Conditions

from .support import mediastream_settings

pytestmark = pytest.mark.asyncio

HOURS = "We are open from noon to ten."
STORY = " ".join(f"Story sentence {n}." for n in range(1, 30))
LOOKUP = {"name": "look_at_screen", "description": "Look at the screen.", "parameters": {"type": "object"}, "client": True}
SETTINGS = {
    "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.locmem.LocmemBackend", "OPTIONS": {}},
    "TTS": {"BACKEND": "mediastream.tts.dummy.ConstantBackend", "OPTIONS": {"VALUE": 3000, "SAMPLE_RATE": 8000, "MS_PER_CHAR": 40}},
    "VAD": {"ENABLED": False},
}


class Recorder:
    """What a relay session hears from its voice, kept in order; client tools wait until the test answers."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.changed = Conditions()
        self.tool_calls: list[ToolCall] = []

    def _add(self, *event: Any) -> None:
        self.events.append(event)
        self.changed.notify()

    def audio(self, pcm: bytes) -> None:
        self._add("audio", len(pcm))

    def clear(self) -> None:
        self._add("clear")

    def mark(self, name: str) -> None:
        self._add("mark", name)

    def transcript(self, role: str, text: str, final: bool) -> None:
        self._add("transcript", role, text, final)

    def error(self, message: str) -> None:
        self._add("error", message)

    def finished(self, reason: str) -> None:
        self._add("finished", reason)

    async def client_tool(self, call: ToolCall, context: CallContext) -> Any:
        self.tool_calls.append(call)
        self.changed.notify()
        await asyncio.Event().wait()  # the browser never answers: only a cut ends this

    def finals(self, role: str = "assistant") -> list[str]:
        return [e[2] for e in self.events if e[0] == "transcript" and e[1] == role and e[3]]

    async def wait(self, predicate, timeout: float = 5.0) -> None:
        await self.changed.wait_for(predicate, timeout)


@pytest_asyncio.fixture
async def voice():
    with mediastream_settings(**SETTINGS):
        agent = ScriptedAgent(
            INTENTS=[
                {"keywords": ["story"], "reply": STORY},
                {"keywords": ["screen"], "before": "Let me look.", "tool": {"name": "look_at_screen"}, "reply": "Done."},
                {"keywords": ["hours"], "reply": HOURS},
            ],
            TOOLS=[LOOKUP],
            CHARS_PER_SECOND=40,  # the story takes seconds to write: it is cut while being written
        )
        recorder = Recorder()
        voice = CascadeVoice(agent, session_id="relay-test", output=recorder, options=CreateParams())
        await voice.connect()
        voice.start()
        stt = backends.transcription.sessions[-1]
        try:
            yield voice, recorder, stt
        finally:
            await voice.close()


async def test_a_new_turn_cuts_the_reply_being_written_and_keeps_its_own_answer(voice):
    voice, recorder, stt = voice
    stt.emit_final("Tell me a story.")
    await recorder.wait(lambda: any(e[0] == "audio" for e in recorder.events))
    stt.emit_final("What are your opening hours?")
    await recorder.wait(lambda: ("mark", "turn-2") in recorder.events)
    finals = recorder.finals()
    assert finals[-1] == HOURS  # the cut story's ending never overwrites the answer that follows it
    assert len(finals) == 2 and STORY.startswith(finals[0]) and finals[0] != STORY
    cut = recorder.events.index(("transcript", "assistant", finals[0], True))
    answer = recorder.events.index(("transcript", "assistant", "We", False))
    assert recorder.events[cut + 1] == ("clear",) and cut < answer  # the story's line ends, its audio is cleared
    # The history reads in order: the story as far as it was heard, then the new question, then its answer.
    history = [(m.role, m.content) for m in voice.history]
    assert history == [
        ("user", "Tell me a story."),
        ("assistant", finals[0]),
        ("user", "What are your opening hours?"),
        ("assistant", HOURS),
    ]


async def test_a_tool_call_cut_off_keeps_its_answer_before_the_next_question(voice):
    voice, recorder, stt = voice
    stt.emit_final("Look at my screen.")
    await recorder.wait(lambda: bool(recorder.tool_calls))
    stt.emit_final("What are your opening hours?")
    await recorder.wait(lambda: ("mark", "turn-2") in recorder.events)
    [call] = recorder.tool_calls
    roles = [(m.role, m.tool_call_id or m.content) for m in voice.history]
    assert roles == [
        ("user", "Look at my screen."),
        ("assistant", "Let me look."),
        ("tool", call.id),
        ("user", "What are your opening hours?"),
        ("assistant", HOURS),
    ]
    [answer] = [m for m in voice.history if m.role == "tool"]
    assert answer.content == INTERRUPTED_TOOL_OUTPUT
    assert recorder.finals()[-1] == HOURS
