"""End of turn: false cut-offs at mid-turn pauses and latency at the real end, VAD silence vs Smart Turn.

    .venv/bin/python bench/end_of_turn.py                       # pauses of 600 and 1000 ms
    .venv/bin/python bench/end_of_turn.py --pauses 800 --threshold 0.5

Test set (``tests.speech_set``):

* **turns with pauses**: the caller stops mid-turn and goes on ("My number is,
  | five five five, | one two three four."): the :data:`TURNS` sentences spoken
  by Piper joe in one go with their comma pauses stretched, and real speakers
  (phone numbers with the gap between digit groups stretched, a read sentence
  with its longest pause stretched);
* **complete turns**: every sentence of the WER set in every installed voice and
  the human recordings, each a whole turn.

Each turn's audio (8 kHz mu-law, phone path, line noise) goes through the real
``SpeechDetector`` window by window; nothing is paced, and the model's time is
measured per call and added. Detectors:

* ``vad H``: the turn ends at the first VAD end of speech with hang time H;
* ``smart-turn h/F``: at every VAD end of speech (hang h) Smart Turn v3.2 looks
  at the turn so far (last 8 s); complete (p >= threshold) ends the turn then,
  else it waits: speech again within F of the silence's start continues the
  turn, none ends it at F (the fallback).

A **false cut-off** is a turn ended before its speech was over; **latency** is
from the turn's last speech (last 10 ms within 30 dB of its loudest) to the
decision, over the turns not cut off.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402

from mediastream.endofturn import EndOfTurn, pcm16k_from_mulaw  # noqa: E402
from mediastream.vad import SpeechDetector, SpeechEnded, SpeechStarted  # noqa: E402
from tests import speech_set  # noqa: E402

_BYTES_PER_MS = 8


@dataclass
class Case:
    id: str
    voice: str
    mulaw: bytes
    speech_end_ms: int
    paused: bool  # has mid-turn pauses


def vad_events(mulaw: bytes, hang: float) -> list:
    detector = SpeechDetector(end_silence_seconds=hang)
    events = []
    for i in range(0, len(mulaw), 160):
        events.extend(detector.feed(mulaw[i : i + 160]))
    events.extend(detector.finish())
    return events


def decide_vad(case: Case, hang: float) -> int | None:
    """Stream ms of the end decision."""
    for event in vad_events(case.mulaw, hang):
        if isinstance(event, SpeechEnded):
            return event.detected_ms
    return None


class SmartTurnRun:
    def __init__(self, model: EndOfTurn) -> None:
        self.model = model
        self.call_ms: list[float] = []
        self.cpu_ms: list[float] = []

    def decide(self, case: Case, vad_hang: float, fallback: float) -> tuple[int | None, str]:
        events = vad_events(case.mulaw, vad_hang)
        for index, event in enumerate(events):
            if not isinstance(event, SpeechEnded):
                continue
            pcm = pcm16k_from_mulaw(case.mulaw[: event.detected_ms * _BYTES_PER_MS])
            wall, cpu = time.perf_counter(), time.process_time()
            complete, _p = self.model.is_complete(pcm)
            self.call_ms.append((time.perf_counter() - wall) * 1000)
            self.cpu_ms.append((time.process_time() - cpu) * 1000)
            if complete:
                return event.detected_ms + int(self.call_ms[-1]), "model"
            deadline = event.offset_ms + int(fallback * 1000)
            resumed = next((e for e in events[index + 1 :] if isinstance(e, SpeechStarted)), None)
            if resumed is None or resumed.detected_ms > deadline:
                return deadline, "fallback"
        return None, "none"


def cases(pause_ms: int) -> list[Case]:
    out = []
    for turn in speech_set.turn_clips(pause_ms=pause_ms) + speech_set.human_turns(pause_ms=pause_ms):
        out.append(Case(f"{turn.id}@{pause_ms}", turn.voice, turn.mulaw, turn.speech_end_ms, True))
    return out


def complete_cases() -> list[Case]:
    from bench.wer import speech_end_ms

    out = []
    clips = speech_set.human_clips() + speech_set.synthetic_clips()
    for clip in clips:
        out.append(Case(clip.id, clip.voice, clip.mulaw + b"\xff" * 8 * 3000, speech_end_ms(clip.mulaw), False))
    return out


def report(name: str, results: list[tuple[Case, int | None]]) -> dict:
    paused = [(c, t) for c, t in results if c.paused]
    cut = [c for c, t in paused if t is not None and t < c.speech_end_ms]
    whole = [(c, t) for c, t in results if not c.paused]
    cut_whole = [c for c, t in whole if t is not None and t < c.speech_end_ms]
    latencies = [t - c.speech_end_ms for c, t in results if t is not None and t >= c.speech_end_ms]
    p = lambda q: float(np.percentile(latencies, q)) if latencies else float("nan")  # noqa: E731
    print(
        f"  {name:<26} false cut-offs {len(cut):>2}/{len(paused):<3} ({len(cut) / max(1, len(paused)):5.1%})"
        f"   latency at the real end p50 {p(50):5.0f} ms  p90 {p(90):5.0f}  max {max(latencies or [0]):5.0f}"
        f"   (n={len(latencies)}; complete sentences cut at a comma {len(cut_whole)}/{len(whole)})"
    )
    return {"cut": len(cut), "paused": len(paused), "p50": p(50), "p90": p(90)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pauses", default="600,1000", help="mid-turn pause lengths (ms)")
    parser.add_argument("--hangs", default="0.3,0.5,0.8", help="VAD-only hang times (s)")
    parser.add_argument("--smart", default="0.2/2.0,0.3/2.0,0.3/3.0", help="smart-turn VAD hang/fallback pairs (s)")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    all_cases = [case for pause in args.pauses.split(",") for case in cases(int(pause))] + complete_cases()
    paused = sum(c.paused for c in all_cases)
    print(
        f"{paused} turns with pauses ({args.pauses} ms), {len(all_cases) - paused} complete turns;"
        f" load {os.getloadavg()[0]:.2f}"
    )
    for hang in [float(h) for h in args.hangs.split(",")]:
        report(f"vad {hang:.1f} s", [(c, decide_vad(c, hang)) for c in all_cases])
    run = SmartTurnRun(EndOfTurn(threshold=args.threshold))
    for pair in args.smart.split(","):
        vad_hang, fallback = (float(x) for x in pair.split("/"))
        outcomes = [(c, *run.decide(c, vad_hang, fallback)) for c in all_cases]
        report(f"smart-turn {vad_hang:.1f}/{fallback:.1f} s", [(c, t) for c, t, _how in outcomes])
        complete = [how for c, _t, how in outcomes if not c.paused]
        print(f"      complete turns ended by the model {complete.count('model')}/{len(complete)}, by the fallback"
              f" {complete.count('fallback')}")  # fmt: skip
        for c, t, how in outcomes:
            if c.paused and t is not None and t < c.speech_end_ms:
                print(f"      cut off: {c.voice} {c.id} at {t} ms (speech ends {c.speech_end_ms} ms)")
    calls = sorted(run.call_ms)
    print(
        f"  Smart Turn per call: wall p50 {np.percentile(calls, 50):.0f} ms p90 {np.percentile(calls, 90):.0f} ms,"
        f" CPU p50 {np.percentile(run.cpu_ms, 50):.0f} ms ({len(calls)} calls, one thread);"
        f" load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
