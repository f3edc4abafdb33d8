"""Embedded speech-to-text on the project's telephone test set: word errors, CPU cost and final latency.

    .venv/bin/python bench/wer.py                                   # every config, all voices, latency on 24 clips
    .venv/bin/python bench/wer.py --configs base --latency-clips 0  # WER and cost only
    .venv/bin/python bench/wer.py --configs base --hang 0.3,0.5 --streams 1,4 --latency-only
    .venv/bin/python bench/wer.py --configs base --latency-clips 0 --noise-seed 1000  # another draw of the line noise

The test set is ``tests.speech_set``: the sentences spoken by every installed
synthetic voice (Piper joe; espeak-ng and flite when the Debian packages are
there) and the committed human recordings, all through the phone path the
consumer receives (8 kHz, 300-3400 Hz, white line noise at ``--noise-dbfs``,
mu-law). For each configuration of :class:`WhisperBackend` it prints:

* **WER** per file and in all (and per voice), scored by
  ``tests.speech_set.scoring`` (digits, times and contractions normalised on
  both sides);
* **cost**: process CPU seconds (all threads) spent transcribing, per second of
  audio, with one utterance transcribed at a time;
* **latency** (``--latency-clips`` clips per hang time and stream count):
  utterances fed through the real ``WhisperSession`` as 20 ms frames on an
  absolute real-time clock, with line noise before and after; latency is from
  sending the frame holding the clip's last speech (the last 10 ms within 30 dB
  of its loudest) to ``on_final``. With ``--streams K`` K sessions talk at once.

It loads each model in this process (nothing else runs here) and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.test import override_settings  # noqa: E402

from bench.common import key_json_pairs  # noqa: E402
from mediastream.audio import ulaw_decode  # noqa: E402
from mediastream.transcription.base import TranscriptionListener  # noqa: E402
from mediastream.transcription.whisper import WhisperBackend  # noqa: E402
from tests import speech_set  # noqa: E402
from tests.audio_fixtures import white_noise  # noqa: E402
from tests.speech_set.scoring import Score, score  # noqa: E402

#: name -> WhisperBackend OPTIONS. "tiny.en-before" is what shipped before: tiny.en, 30 s window, beam 5.
CONFIGS: dict[str, dict] = {
    "tiny.en-before": {
        "MODEL": "tiny.en", "ENCODER_WINDOW_SECONDS": None, "BEAM_SIZE": 5,
        "SPECULATE_AFTER_MS": None, "CPU_THREADS": 1, "INITIAL_PROMPT": None,
    },  # fmt: skip
    "tiny.en": {"MODEL": "tiny.en", "INITIAL_PROMPT": None},
    "base-30s": {"MODEL": "base", "ENCODER_WINDOW_SECONDS": None, "INITIAL_PROMPT": None},
    "base-beam1": {"MODEL": "base", "BEAM_SIZE": 1, "INITIAL_PROMPT": None},
    "base-noprompt": {"INITIAL_PROMPT": None},  # the default until the initial prompt
    "base": {},  # the default: base, 10 s window, beam 5, speculation, 2 threads, the phone-call initial prompt
}

TARGET_WER = 0.10
TARGET_LATENCY_P50_MS = 500.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def speech_end_ms(mulaw: bytes) -> int:
    x = ulaw_decode(mulaw).astype(np.float64)
    n = len(x) // 80
    energy = (x[: n * 80].reshape(n, 80) ** 2).mean(axis=1)
    return int(np.nonzero(energy >= energy.max() * 10 ** (-30 / 10))[0][-1] + 1) * 10


# --- WER and cost ---------------------------------------------------------------------------------------


async def word_errors(name: str, backend: WhisperBackend, clips, *, verbose: bool) -> dict:
    await backend.load()
    await backend.transcribe(clips[0].mulaw)  # warm-up, not counted
    total, by_voice, audio_s, cpu = Score(0, 0), {}, 0.0, 0.0
    print(f"\n== {name}: {CONFIGS[name] or 'defaults'}")
    for clip in clips:
        before = cpu_seconds()
        text = await backend.transcribe(clip.mulaw)
        cpu += cpu_seconds() - before
        audio_s += clip.seconds
        result = score(clip.text, text)
        total += result
        part = "human" if not clip.voice.startswith(("piper", "espeak", "flite")) else clip.voice
        by_voice[part] = by_voice.get(part, Score(0, 0)) + result
        if verbose or result.errors:
            print(f"  {clip.voice:>24} {clip.id:<16} {result.errors:>2}/{result.words:<3} {clip.text!r} -> {text!r}")
    parts = "  ".join(f"{part} {s.wer:.1%} ({s.errors}/{s.words})" for part, s in sorted(by_voice.items()))
    print(f"  WER all {total.wer:.1%} ({total.errors}/{total.words} words, {len(clips)} files)   {parts}")
    print(f"  cost {cpu / audio_s:.3f} CPU s per audio s ({cpu / len(clips) * 1000:.0f} ms CPU per utterance)")
    return {"wer": total.wer, "errors": total.errors, "words": total.words, "cost": cpu / audio_s,
            "parts": {part: s.wer for part, s in by_voice.items()}}  # fmt: skip


# --- latency through the real session ----------------------------------------------------------------


@dataclass
class Fed:
    clip: object
    last_speech_sent: float = 0.0
    finals: list = field(default_factory=list)
    final_at: float | None = None
    ended_at: float | None = None  # the VAD's end-of-speech decision


async def feed_paced(session, mulaw: bytes, fed: Fed, end_ms: int, start: float) -> None:
    """20 ms frames at real-time pace on an absolute clock from ``start``."""
    frames = [mulaw[i : i + 160] for i in range(0, len(mulaw), 160)]
    for k, frame in enumerate(frames):
        due = start + k * 0.02
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        session.send_audio(frame)
        if (k + 1) * 20 >= end_ms and not fed.last_speech_sent:
            fed.last_speech_sent = time.perf_counter()


async def one_stream(backend: WhisperBackend, clips, index: int, results: list[float], stats: dict) -> None:
    lead, gap = white_noise(600, dbfs=-55, seed=index), white_noise(1500, dbfs=-55, seed=index + 1)
    for n, clip in enumerate(clips):
        fed = Fed(clip)
        done = asyncio.Event()

        def on_final(text, start_ms, end_ms, fed=fed, done=done):
            fed.finals.append(text)
            fed.final_at = time.perf_counter()
            done.set()

        session = backend.create_session(
            stream_sid=f"MZbench{index}-{n}", call_sid="CAbench", listener=TranscriptionListener(on_final=on_final)
        )
        await session.connect()

        def on_vad(event, fed=fed):
            if type(event).__name__ == "SpeechEnded" and fed.ended_at is None:
                fed.ended_at = time.perf_counter()

        session.on_vad_event = on_vad
        audio = lead + clip.mulaw + gap
        end = len(lead) // 8 + speech_end_ms(clip.mulaw)
        await feed_paced(session, audio, fed, end, time.perf_counter())
        try:
            await asyncio.wait_for(done.wait(), 10)
        except TimeoutError:
            stats["missing"] += 1
        await session.close()
        stats["speculations"] += session.speculations
        stats["kept"] += session.speculations_kept
        stats["utterances"] += 1
        stats["finals"] += len(fed.finals)
        stats["streamed"] += score(clip.text, " ".join(fed.finals))
        if fed.final_at is not None:
            results.append((fed.final_at - fed.last_speech_sent) * 1000)
            if fed.ended_at is not None:
                stats["vad_end_ms"].append((fed.ended_at - fed.last_speech_sent) * 1000)


async def latency(name: str, backend: WhisperBackend, clips, *, hang: float, streams: int, end_threshold=None) -> dict:
    vad = {"END_SILENCE_SECONDS": hang, **({"END_THRESHOLD": end_threshold} if end_threshold else {})}
    with override_settings(MEDIASTREAM={"VAD": vad}):
        results: list[float] = []
        stats = {"speculations": 0, "kept": 0, "utterances": 0, "finals": 0, "missing": 0, "vad_end_ms": [], "streamed": Score(0, 0)}
        per_stream = [clips[i::streams] for i in range(streams)]
        await asyncio.gather(*(one_stream(backend, part, i, results, stats) for i, part in enumerate(per_stream)))
    results.sort()
    p = lambda q: float(np.percentile(results, q)) if results else float("nan")  # noqa: E731
    print(
        f"  latency {name} hang {hang:.2f}s K={streams}: p50 {p(50):.0f} ms  p90 {p(90):.0f}"
        f"  max {max(results or [0]):.0f}"
        f"  (n={len(results)}, finals/utterance {stats['finals'] / max(1, stats['utterances']):.2f},"
        f" speculations {stats['speculations']} kept {stats['kept']}, missing {stats['missing']};"
        f" VAD end decision p50 {statistics.median(stats['vad_end_ms'] or [0]):.0f} ms after the last speech;"
        f" WER of these finals {100 * stats['streamed'].wer:.1f} % of {stats['streamed'].words} words)"
    )
    streamed = stats.pop("streamed")
    return {"p50": p(50), "p90": p(90), "max": max(results or [0]), "streamed_wer": streamed.wer, **stats}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--voices", default="", help="comma-separated (default: every installed voice)")
    parser.add_argument("--noise-dbfs", type=float, default=-55.0, help="white line noise RMS; 'off' is -200")
    parser.add_argument("--noise-seed", type=int, default=0,
                        help="shift the line noise's seeds: the same speech under another draw of the noise (0: the set)")
    parser.add_argument("--latency-clips", type=int, default=24)
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--hang", default="0.3", help="END_SILENCE_SECONDS values for the latency runs")
    parser.add_argument("--streams", default="1", help="concurrent paced sessions for the latency runs")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="extra WhisperBackend option for every config, e.g. CPU_THREADS=2 (JSON values)")
    parser.add_argument("--end-threshold", type=float, default=None, help="VAD END_THRESHOLD for the latency runs")
    parser.add_argument("--verbose", action="store_true", help="print every file, not only those with errors")
    args = parser.parse_args()
    noise = None if args.noise_dbfs <= -200 else args.noise_dbfs
    voices = [v for v in args.voices.split(",") if v] or speech_set.available_voices()
    clips = speech_set.human_clips(noise_dbfs=noise, noise_seed=args.noise_seed) + speech_set.synthetic_clips(
        voices, noise_dbfs=noise, noise_seed=args.noise_seed
    )
    print(f"test set: {len(clips)} files, {sum(c.seconds for c in clips):.0f} s, voices {voices} + human;"
          f" line noise {noise} dBFS, seed +{args.noise_seed}; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")  # fmt: skip
    # Latency clips: spread over voices and categories, the same for every config.
    rng = np.random.default_rng(7)
    picked = [clips[i] for i in sorted(rng.choice(len(clips), size=min(args.latency_clips, len(clips)), replace=False))]
    summary = []
    extra = key_json_pairs(args.set)
    for name in args.configs.split(","):
        CONFIGS[name] = {**CONFIGS[name], **extra}
        backend = WhisperBackend(**CONFIGS[name])
        row = {"config": name}
        if not args.latency_only:
            row.update(await word_errors(name, backend, clips, verbose=args.verbose))
        if picked:
            for hang in [float(h) for h in args.hang.split(",")]:
                for streams in [int(k) for k in args.streams.split(",")]:
                    row[f"latency hang={hang} K={streams}"] = await latency(
                        name, backend, picked, hang=hang, streams=streams, end_threshold=args.end_threshold
                    )
        summary.append(row)
        backend.close()
    print(f"\n== summary (load now {os.getloadavg()[0]:.2f}; targets: WER <= {TARGET_WER:.0%}, final p50 <= 500 ms)")
    for row in summary:
        line = f"  {row['config']:<16}"
        if "wer" in row:
            line += f" WER {row['wer']:6.1%}  cost {row['cost']:.3f} CPU s/audio s"
        for key, value in row.items():
            if key.startswith("latency"):
                line += f"  | {key[8:]}: p50 {value['p50']:.0f} p90 {value['p90']:.0f} ms"
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
