"""Word error rate with the normalisation a phone-bot transcript needs.

Whisper writes "555-1234", "7:30", "Dr. Patel" and "20 minutes" where the
reference says the words that were spoken. Both sides go through
:func:`normalize` (lower case, no punctuation, digits, times and ordinals
spelled out, "at 9.15" read as a clock time, common contractions and titles
expanded, fillers and the "and" inside a number dropped) and
are then compared word by word (Levenshtein distance over words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Score", "normalize", "score", "wer"]

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip

_CONTRACTIONS = {
    "i'm": "i am", "i'd": "i would", "i'll": "i will", "i've": "i have",
    "you're": "you are", "you'll": "you will", "we're": "we are", "we'll": "we will",
    "they're": "they are", "it's": "it is", "that's": "that is", "there's": "there is",
    "what's": "what is", "where's": "where is", "how's": "how is", "let's": "let us",
    "don't": "do not", "doesn't": "does not", "didn't": "did not", "can't": "can not",
    "cannot": "can not", "won't": "will not", "isn't": "is not", "aren't": "are not",
    "wasn't": "was not", "couldn't": "could not", "wouldn't": "would not", "shouldn't": "should not",
    "o'clock": "o clock",
}  # fmt: skip

_WORDS = {
    "ok": "okay", "mr": "mister", "mrs": "missus", "dr": "doctor", "pm": "p m",
}  # fmt: skip

_FILLERS = {"um", "uh", "erm", "hmm", "mm", "ah"}
_SCALES = {"hundred", "thousand"}
_NUMBER_WORDS = set(_ONES) | set(_TENS[2:])


def _cardinal(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + _cardinal(rest))
    thousands, rest = divmod(n, 1000)
    return _cardinal(thousands) + " thousand" + ("" if rest == 0 else " " + _cardinal(rest))


def _ordinal(n: int) -> str:
    words = _cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits(run: str) -> str:
    return " ".join(_ONES[int(d)] for d in run)


def _time(match: re.Match[str]) -> str:
    return _time_of(match.group(1), match.group(2))


def _time_of(hour_digits: str, minute: str) -> str:
    """A clock time as said: "9:15" and, after "at", the British "9.15" are "nine fifteen"."""
    hour = int(hour_digits)
    if minute == "00":
        return _cardinal(hour)
    if minute.startswith("0"):
        return f"{_cardinal(hour)} oh {_ONES[int(minute[1])]}"
    return f"{_cardinal(hour)} {_cardinal(int(minute))}"


def _money(match: re.Match[str]) -> str:
    dollars, cents = int(match.group(1).replace(",", "")), match.group(2)
    text = f"{_cardinal(dollars)} dollars"
    if cents and int(cents):
        text += f" and {_cardinal(int(cents))} cents"
    return text


def _number(match: re.Match[str]) -> str:
    run = match.group(0)
    # Phone, account and order numbers are read digit by digit; counts as cardinals.
    if len(run) >= 4 or (len(run) > 1 and run.startswith("0")):
        return _digits(run)
    return _cardinal(int(run))


def normalize(text: str) -> list[str]:
    """The words of ``text`` in the form both reference and hypothesis are compared in."""
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"\$(\d[\d,]*)(?:\.(\d\d))?", _money, t)
    t = re.sub(r"\b(\d{1,2}):(\d\d)\b", _time, t)
    t = re.sub(r"\bat (\d{1,2})\.([0-5]\d)\b", lambda m: "at " + _time_of(m.group(1), m.group(2)), t)
    t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _ordinal(int(m.group(1))), t)
    # Digit groups joined by separators ("555-1234", "386 001 7") are one number read out.
    t = re.sub(r"\d+(?:[-.\s]\d+)+", lambda m: _digits(re.sub(r"\D", "", m.group(0))), t)
    t = re.sub(r"\d+", _number, t)
    t = re.sub(r"\b([ap])\.m\.", r"\1 m", t)
    t = t.replace("%", " percent")
    words: list[str] = []
    for raw in re.split(r"[\s\-/]+", t):
        raw = raw.strip(".,!?;:\"()[]…")
        if not raw:
            continue
        expanded = _CONTRACTIONS.get(raw, raw)
        for word in expanded.split():
            word = word.strip(".'")
            word = _WORDS.get(word, word)
            for piece in re.sub(r"[^a-z' ]", " ", word).split():
                piece = piece.strip("'")
                if piece and piece not in _FILLERS:
                    words.append(piece)
    # "three hundred and forty" and "three hundred forty" are the same number said.
    return [
        w for i, w in enumerate(words)
        if not (w == "and" and 0 < i < len(words) - 1 and words[i - 1] in _SCALES and words[i + 1] in _NUMBER_WORDS)
    ]  # fmt: skip


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


@dataclass(frozen=True, slots=True)
class Score:
    """Word errors (substitutions + deletions + insertions) against the reference's word count."""

    errors: int
    words: int

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(self.errors + other.errors, self.words + other.words)


def score(reference: str, hypothesis: str) -> Score:
    ref, hyp = normalize(reference), normalize(hypothesis)
    return Score(_edit_distance(ref, hyp), len(ref))


def wer(reference: str, hypothesis: str) -> float:
    return score(reference, hypothesis).wer
