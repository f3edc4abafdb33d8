"""``manage.py simulate_call --script``: a conversation with a real daphne, turn by turn, printed with its latencies.

Each test starts daphne (the shared ``daphne`` fixture: the test database,
Redis) with an agent, and runs the command in this process against it: the
caller's utterances are spoken by the embedded Piper here and streamed in
real time, the agent's replies come back on the socket, and the command
prints every turn from the call's event log.

* ScriptedAgent (the demo's restaurant) with the embedded Whisper hearing
  the caller: opening hours, a keypress, goodbye (the agent ends the call);
* ChatCompletionsAgent pointed at a local fake model, and RealtimeAgent
  pointed at its fake: the fake vendors play the speech recognition part, so
  this process ends each caller turn when the audio they received goes quiet
  (:class:`Endpointer`).
"""

from __future__ import annotations

import asyncio
import io
import json
import re

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mediastream.audio import ulaw_decode

from .support import mediastream_settings, requires_speech
from .vendors_agent import FakeChatCompletions, FakeRealtime, Reply, Speak
from .vendors_stt.deepgram import FakeDeepgram

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), requires_speech]

#: The agent's voice on the server: constant audio, quick to play (8 ms a character).
QUICK_TTS = {
    "BACKEND": "mediastream.tts.dummy.ConstantBackend",
    "OPTIONS": {"VALUE": 3000, "SAMPLE_RATE": 8000, "MS_PER_CHAR": 8, "MIN_MS": 200},
}
WHISPER = {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}}
DEMO_AGENT = {"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"SCRIPT": "mediastream.agents.demo"}}
#: The caller's voice in this process: the embedded Piper, as simulate_call --say uses.
PIPER = {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}}


async def simulate(live, script_path, out_path) -> str:
    """Run the command (in a thread: it runs its own event loop); its stdout."""
    out = io.StringIO()
    with mediastream_settings(TTS=PIPER):
        await asyncio.to_thread(
            call_command,
            "simulate_call", "--server", live.http, "--script", str(script_path), "--out", str(out_path),
            stdout=out,
        )  # fmt: skip
    return out.getvalue()


def turn_lines(output: str, number: int) -> list[str]:
    return [line for line in output.splitlines() if f"] turn {number}:" in line]


def latency_of(lines: list[str]) -> int:
    [line] = [line for line in lines if "latency:" in line]
    return int(re.search(r"caller stopped -> agent audio (\d+) ms", line).group(1))


async def test_a_scripted_agent_answers_each_turn_of_the_script(daphne, tmp_path):
    script = tmp_path / "call.txt"
    script.write_text("# the demo restaurant\nWhat are your opening hours?\n[pause 0.5]\n[dtmf 2]\nGoodbye.\n")
    overrides = {"AGENT": DEMO_AGENT, "TTS": QUICK_TTS, "TRANSCRIPTION": WHISPER}
    async with daphne.astart(overrides, name="daphne-scripted") as live:
        output = await simulate(live, script, tmp_path / "agent.wav")
    assert "agent greets: \"Hello, thanks for calling Luigi's." in output

    first = turn_lines(output, 1)
    assert "caller says 'What are your opening hours?'" in first[0]
    heard = next(line for line in first if ": heard " in line)
    assert "hours" in heard.lower()  # Whisper on the server heard the Piper speech sent from here
    assert any("agent 'We are open from noon to ten p.m., Tuesday to Sunday.' (finished)" in line for line in first)
    assert 0 < latency_of(first) < 10_000
    assert re.search(r"after the turn started: first token \d+ ms, first audio \d+ ms, reply ended \d+ ms", "\n".join(first))

    second = turn_lines(output, 2)
    assert "caller presses 2" in second[0]
    assert any("agent 'To book a table, tell me how many people and at what time.' (finished)" in line for line in second)

    third = turn_lines(output, 3)
    assert any("tool end_call({}) -> ok" in line for line in third)
    assert any("agent \"Thanks for calling Luigi's. Goodbye!\" (finished)" in line for line in third)
    assert "the server ended the stream (1000)" in output  # the agent hung up after its goodbye played
    assert re.search(r"voice to voice \(caller stopped -> first agent audio\): median \d+ ms, worst \d+ ms over 3 answered turns", output)
    assert (tmp_path / "agent.wav").stat().st_size > 44


class Endpointer:
    """Plays a vendor's end-of-turn detection: when the caller's audio a fake received goes quiet after speech."""

    def __init__(self, audio_of, *, quiet_ms: int = 400) -> None:
        self.audio_of = audio_of  # () -> the mu-law the vendor has received so far
        self.quiet_frames = quiet_ms // 20
        self.checked = 0  # bytes already looked at

    def _loud(self, frame: bytes) -> bool:
        x = ulaw_decode(frame).astype(np.float64)
        return float(np.sqrt(np.mean(x**2))) > 300.0  # about -40 dBFS: speech, not the line's silence

    async def next_utterance(self, server, timeout: float = 60.0) -> None:
        """Wait until an utterance has been spoken and followed by ``quiet_ms`` of silence."""
        spoke, quiet = False, 0

        def ended() -> bool:
            nonlocal spoke, quiet
            audio = self.audio_of()
            while self.checked + 160 <= len(audio):
                frame = audio[self.checked : self.checked + 160]
                self.checked += 160
                if self._loud(frame):
                    spoke, quiet = True, 0
                elif spoke:
                    quiet += 1
                    if quiet >= self.quiet_frames:
                        return True
            return False

        await server.wait_for(ended, timeout)


async def test_a_chat_completions_agent_against_a_local_model(daphne, tmp_path):
    script = tmp_path / "call.json"
    script.write_text(json.dumps(["What are your opening hours?", {"pause": 0.3, "say": "Thank you."}]))
    said = ["what are your opening hours", "thank you"]
    async with FakeDeepgram() as stt, FakeChatCompletions(respond=lambda body: Reply(text=f"You said {body['messages'][-1]['content']}.")) as model:
        overrides = {
            "AGENT": {"BACKEND": "mediastream.agents.openai.ChatCompletionsAgent",
                      "OPTIONS": {"API_KEY": "sk-test-key", "BASE_URL": model.base_url, "MODEL": "local-fake"}},
            "TTS": QUICK_TTS,
            "TRANSCRIPTION": {"BACKEND": "mediastream.transcription.deepgram.DeepgramBackend",
                              "OPTIONS": {"API_KEY": "dg-test-key", "URL": stt.url}},
        }  # fmt: skip
        async with daphne.astart(overrides, name="daphne-chat") as live:
            command = asyncio.create_task(simulate(live, script, tmp_path / "agent.wav"))
            connection = await stt.wait_connections(1, timeout=30)
            endpointer = Endpointer(lambda: FakeDeepgram.audio(connection))
            for text in said:
                await endpointer.next_utterance(stt)
                await stt.results(text, is_final=True, speech_final=True, start=0.0, duration=1.0)
            output = await command
    for number, text in enumerate(said, 1):
        lines = turn_lines(output, number)
        assert any(f"heard '{text}'" in line for line in lines)
        assert any(f"agent 'You said {text}.' (finished)" in line for line in lines)
        assert latency_of(lines) > 0
    assert [json.loads(r.body)["messages"][-1]["content"] for r in model.requests] == said
    assert "over 2 answered turns" in output


async def test_a_realtime_agent_against_its_fake(daphne, tmp_path):
    script = tmp_path / "call.txt"
    script.write_text("What are your opening hours?\nThank you.\n")
    plans = [Speak("We open at noon.", b"\x10" * 4000), Speak("You are welcome.", b"\x20" * 4000)]
    async with FakeRealtime(api_key="sk-test-key", plans=plans) as model:
        overrides = {
            "AGENT": {"BACKEND": "mediastream.agents.openai.RealtimeAgent",
                      "OPTIONS": {"API_KEY": "sk-test-key", "BASE_URL": f"ws://127.0.0.1:{model.port}/v1/realtime"}},
            "TTS": QUICK_TTS,
        }  # fmt: skip
        async with daphne.astart(overrides, name="daphne-realtime") as live:
            command = asyncio.create_task(simulate(live, script, tmp_path / "agent.wav"))
            connection = await model.wait_connections(1, timeout=30)
            endpointer = Endpointer(lambda: FakeRealtime.audio(connection))
            for text in ("What are your opening hours?", "Thank you."):
                await endpointer.next_utterance(model)
                await model.caller_turn(text)
            output = await command
    first, second = turn_lines(output, 1), turn_lines(output, 2)
    assert any("agent 'We open at noon.' (finished)" in line for line in first)
    assert any("agent 'You are welcome.' (finished)" in line for line in second)
    assert latency_of(first) > 0 and latency_of(second) > 0
    assert "over 2 answered turns" in output


async def test_a_script_that_cannot_be_used_is_refused_before_the_call(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"say": "Hello", "dtmf": "1"}]))
    with pytest.raises(CommandError, match=r"Cannot use the script .*step 1 has both say and dtmf"):
        await asyncio.to_thread(call_command, "simulate_call", "--server", "http://127.0.0.1:9", "--script", str(bad))
    keys = tmp_path / "keys.txt"
    keys.write_text("[dtmf 12x]\n")
    with pytest.raises(CommandError, match=r"line 1: dtmf must be keypad digits"):
        await asyncio.to_thread(call_command, "simulate_call", "--server", "http://127.0.0.1:9", "--script", str(keys))


async def test_text_and_json_scripts_give_the_same_steps():
    from mediastream.conversation_sim import Step, parse_script

    text = "[pause 1.5]\n# a comment\nWhat are your opening hours?\n\n[dtmf 2]\nGoodbye.\n"
    data = json.dumps([{"pause": 1.5}, "What are your opening hours?", {"dtmf": "2"}, {"say": "Goodbye."}])
    expected = [Step(pause=1.5), Step(say="What are your opening hours?"), Step(dtmf="2"), Step(say="Goodbye.")]
    assert parse_script(text) == parse_script(data) == expected
