"""Splitting a long reply into pieces a TTS backend can synthesize in time.

One synthesis request per reply can outlast the synthesis timeout and leave
the caller in silence; pieces of at most ``max_chars`` are synthesized and
played back to back instead. The rules:

1. A reply of at most ``max_chars`` is one piece.
2. Otherwise it is cut into sentences after ``. ! ?`` (and CJK ``。！？``) and
   the whitespace that follows them, so every piece starts and ends where a
   speaker pauses anyway. A run of punctuation with no words (a leading
   ``...`` or ``?``) joins the sentence after it.
3. Consecutive sentences are packed into one piece up to ``max_chars``
   (fewer boundaries, smoother prosody).
4. A sentence longer than ``max_chars`` is cut at the last newline or other
   whitespace that fits, or mid-token when there is none (a long URL).

``. ! ?`` end a sentence only when whitespace or the end of the text follows,
so ``3.50``, ``example.com`` and ``.NET`` are never cut apart (splitting after
every ``.`` would cut "$3." from "50" when a piece boundary lands there). CJK
terminators need no space.

The split is lossless: ``"".join(split_text(text)) == text`` for any text
with speech in it. The whitespace at a piece boundary stays at the end of the
piece before it (``piece.strip()`` gives the piece without it). Every piece is
at most ``max_chars`` long. A piece is whitespace only only when the text has
a whitespace run longer than ``max_chars``; callers skip blank pieces.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_CHARS", "FIRST_CLAUSE_MIN_CHARS", "SentenceStream", "split_text"]

DEFAULT_MAX_CHARS = 320

# One sentence: the shortest run up to terminators (ASCII ones only before
# whitespace or the end) plus the whitespace after them; or the final run.
# Everything is matched, so text opening with punctuation is never dropped.
_SENTENCE = re.compile(r".*?(?:[.!?]+(?=\s|\Z)|[。！？]+)\s*|.+\Z", re.DOTALL)
_SPEECH_CHAR = re.compile(r"[^.!?。！？\s]")
_WHITESPACE_RUN = re.compile(r"\s+")


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars`` at natural pauses.

    Returns ``[]`` for empty or whitespace-only text.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if not text or not text.strip():
        return []
    if len(text) <= max_chars:
        return [text]

    pieces: list[str] = []
    buffer = ""
    for sentence in _sentences(text):
        if len(sentence) > max_chars:
            if buffer:
                pieces.append(buffer)
                buffer = ""
            pieces.extend(_hard_split(sentence, max_chars))
        elif len(buffer) + len(sentence) > max_chars:
            pieces.append(buffer)
            buffer = sentence
        else:
            buffer += sentence
    if buffer:
        pieces.append(buffer)
    return pieces


def _sentences(text: str) -> list[str]:
    """Sentences whose concatenation is ``text``; punctuation-only runs join the next one."""
    sentences: list[str] = []
    pending = ""
    for match in _SENTENCE.finditer(text):
        piece = match.group()
        if _SPEECH_CHAR.search(piece):
            sentences.append(pending + piece)
            pending = ""
        else:
            pending += piece
    if pending:
        if sentences:
            sentences[-1] += pending
        else:
            sentences.append(pending)
    return sentences


def _hard_split(sentence: str, max_chars: int) -> list[str]:
    """Cut one over-long sentence at whitespace (newlines first), else mid-token."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[:max_chars]
        cut = _break_after(window, "\n") or _break_after(window, None) or max_chars
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def _break_after(window: str, char: str | None) -> int:
    """End of the last whitespace run (of ``char``, or any) preceded by text; 0 if none."""
    best = 0
    for run in _WHITESPACE_RUN.finditer(window):
        if run.start() == 0:
            continue
        if char is not None and char not in run.group():
            continue
        best = run.end()
    return best


#: A reply's first piece may end at a clause (``, ; :`` and whitespace) once it has this many characters.
FIRST_CLAUSE_MIN_CHARS = 4


class SentenceStream:
    """Cuts text that arrives token by token into sentences as soon as each is complete.

    A model's reply streams in fragments; TTS wants whole sentences (the first
    one as early as possible, so it plays while the model writes the rest). A
    sentence is complete at ``. ! ?`` followed by whitespace (or a CJK
    terminator), the same rule as :func:`split_text`; a run longer than
    ``max_chars`` without one is cut at the last whitespace that fits.

    The first piece of the stream is cut earlier, at its first clause
    boundary (``, ; :`` followed by whitespace) that leaves at least
    ``first_clause_chars`` characters: the caller's wait for the first audio is
    the synthesis of that piece (Piper synthesizes a piece whole, about 10 ms a
    character on these machines), so "Sure," plays while the rest of the first
    sentence is synthesized behind it (bench/README.md, "Voice-to-voice
    latency"). Later pieces are whole sentences, for their prosody.
    ``first_clause_chars=None`` cuts only at sentence ends.
    """

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS, first_clause_chars: int | None = FIRST_CLAUSE_MIN_CHARS) -> None:
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self._buffer = ""
        self._first = first_clause_chars is not None

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the sentences it completed."""
        self._buffer += text
        done: list[str] = []
        while True:
            match = _COMPLETE.match(self._buffer)
            end = match.end() if match is not None else None
            if self._first:
                clause_end = self._first_clause_end(end)
                if clause_end is not None:
                    end = clause_end
            if end is None or len(self._buffer[:end].strip()) > self.max_chars:
                break  # none yet, or too long for one piece: cut at whitespace below
            piece = self._buffer[:end].strip()
            self._buffer = self._buffer[end:]
            if piece:
                done.append(piece)
                self._first = False
        while len(self._buffer) > self.max_chars:
            cut = _break_after(self._buffer[: self.max_chars], None) or self.max_chars
            done.append(self._buffer[:cut].strip())
            self._buffer = self._buffer[cut:]
            self._first = False
        return [sentence for sentence in done if sentence]

    def _first_clause_end(self, sentence_end: int | None) -> int | None:
        """End of the first long-enough clause that comes before ``sentence_end``; None if there is none yet."""
        for clause in _CLAUSE_END.finditer(self._buffer):
            if sentence_end is not None and clause.end() >= sentence_end:
                return None
            if len(self._buffer[: clause.start()].strip()) + 1 >= self.first_clause_chars:
                return clause.end()
        return None

    def flush(self) -> list[str]:
        """The unfinished rest, once the reply is complete."""
        rest, self._buffer = self._buffer.strip(), ""
        if rest:
            self._first = False
        return [rest] if rest else []


# A complete sentence: up to terminators that are followed by whitespace (which is consumed).
_COMPLETE = re.compile(r".*?(?:[.!?]+\s+|[。！？]+)", re.DOTALL)
# A clause boundary: a comma, semicolon or colon followed by whitespace (consumed); CJK commas need none.
_CLAUSE_END = re.compile(r"[,;:]\s+|[，、；：]")
