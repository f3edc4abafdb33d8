"""Caller-turn normalisation: exactly one speech start per caller utterance.

Speech-start signals arrive from several places, often for the same words:
the local VAD (fastest), the transcription backend's own speech-start event,
the first partial transcript, or, for backends with no native start event, only
the final transcript. Barge-in and turn bookkeeping want **one** "the caller
started talking" per utterance. :class:`CallerTurns` is a small pure state
machine (no I/O, no clock, no asyncio) that says when to fire it.

The rule:

1. The first of {local VAD start, backend start, partial, final} while no
   utterance is open **opens** one and fires the speech start.
2. Further starts and partials inside the open utterance fire nothing.
3. A **final** transcript closes the utterance. A lone final with no open
   utterance fires a speech start first (so providers without a start event
   still cause barge-in), then closes it. An empty final closes an open
   utterance and fires nothing.
4. A local VAD **speech end** does not close the utterance when the backend
   delivers finals (``finals_expected=True``): the final that is on its way
   belongs to this utterance and must not open a new one. It only marks the
   utterance *quiet*. If the local VAD then hears speech again before the
   final arrives, that is a new utterance (the caller paused for at least the
   VAD's end-of-speech silence and spoke again) and the start fires again. This
   keeps barge-in working after a cough or noise the backend never finalises.
   Backend starts and partials never reopen a quiet utterance (they lag the VAD
   and usually belong to the words the VAD already saw). The final of the
   superseded utterance is still owed: when it arrives it is matched to that
   utterance, and neither fires nor closes the one open now.
5. With ``finals_expected=False`` (no transcription, e.g. the discard backend),
   the VAD speech end closes the utterance.
"""

from __future__ import annotations

__all__ = ["CallerTurns", "TurnEnd"]


class CallerTurns:
    """Decides when a caller speech start fires. Each ``on_*`` returns True when it must fire now."""

    def __init__(self, *, finals_expected: bool = True) -> None:
        self.finals_expected = finals_expected
        #: Speech starts fired so far (= caller utterances seen).
        self.utterances = 0
        self._open = False
        self._quiet = False
        # Earlier utterances the VAD saw end whose transcripts have not come yet:
        # their finals must not close (or re-fire) the utterance open now.
        self._finals_owed = 0

    @property
    def quiet(self) -> bool:
        """Whether the VAD heard the open utterance stop (its final is still to come)."""
        return self._quiet

    @property
    def in_utterance(self) -> bool:
        """Whether a caller utterance is open (its final has not arrived yet)."""
        return self._open

    def _start(self) -> bool:
        if self._open:
            return False
        self._open = True
        self._quiet = False
        self.utterances += 1
        return True

    def on_vad_start(self) -> bool:
        """The local VAD heard speech begin."""
        if self._open and self._quiet:
            self._open = False  # the previous utterance's final is still on its way
            self._finals_owed += 1
        return self._start()

    def on_vad_end(self) -> None:
        """The local VAD heard the speech stop."""
        if not self._open:
            return
        if self.finals_expected:
            self._quiet = True
        else:
            self._open = False

    def on_backend_start(self) -> bool:
        """The transcription backend reported speech start."""
        return self._start()

    def on_partial(self, text: str) -> bool:
        """A partial transcript arrived (empty partials are ignored)."""
        if not text.strip():
            return False
        return self._start()

    def on_final(self, text: str) -> bool:
        """A final transcript arrived; it ends the utterance. True: fire the start before it."""
        if self._finals_owed:
            self._finals_owed -= 1  # it belongs to an utterance that already ended
            return False
        fired = self._start() if text.strip() else False
        self._open = False
        self._quiet = False
        return fired


class TurnEnd:
    """Whether a caller's turn is over when its final transcript arrives (``MEDIASTREAM["END_OF_TURN"]``).

    The final comes when the VAD has heard ``END_SILENCE_SECONDS`` of silence.
    With no end-of-turn model and a hang no longer than that, the turn ends
    then (``hold_after_final`` 0: the default). Otherwise the final's text is
    held: with a model, the model is asked whether the turn sounds complete;
    complete ends it after ``hold_after_final``, incomplete after
    ``fallback_after_final`` (both counted from the final) unless the caller
    speaks again first, in which case the next final's text joins the held one
    and the rule starts over. Pure: the session turns these answers into
    timers and model checks.
    """

    def __init__(self, *, model: bool = False, hold_after_final: float = 0.0, fallback_after_final: float = 0.0) -> None:
        self.model = model
        self.hold_after_final = hold_after_final
        self.fallback_after_final = fallback_after_final
        self._texts: list[str] = []
        self._start_ms: int | None = None
        #: The id of the latest model check; an answer to an older one is stale.
        self.check_id = 0
        #: The model's verdicts on the held turn, in order (for the turn's event).
        self.verdicts: list[dict] = []

    @property
    def immediate(self) -> bool:
        """Whether every final ends its turn at once (no model, no extra hang)."""
        return not self.model and self.hold_after_final <= 0

    @property
    def holding(self) -> bool:
        return bool(self._texts)

    @property
    def start_ms(self) -> int | None:
        """Where the held turn's speech began (stream ms), for the model's audio."""
        return self._start_ms

    def final(self, text: str, start_ms: int | None) -> float | None:
        """A final transcript: hold it. Returns the seconds to wait before the turn ends (the timer).

        With a model the caller of this also asks it (check :attr:`check_id`).
        """
        if not self._texts:
            self._start_ms = start_ms
        self._texts.append(text)
        if self.model:
            self.check_id += 1
            return self.fallback_after_final
        return self.hold_after_final

    def speech_resumed(self) -> bool:
        """The caller spoke again: True if a held turn goes on (its timer and pending check no longer count)."""
        if not self._texts:
            return False
        self.check_id += 1
        return True

    def checked(self, check_id: int, complete: bool, probability: float | None) -> float | None:
        """The model's answer. Returns the seconds until the turn ends now (0: at once), None to keep waiting."""
        if check_id != self.check_id or not self._texts:
            return None
        self.verdicts.append({"complete": complete, "probability": probability})
        return self.hold_after_final if complete else None

    def take(self) -> str:
        """The held turn's text, and nothing held any more."""
        text = " ".join(self._texts)
        self._texts, self._start_ms = [], None
        self.check_id += 1
        return text

    def take_verdicts(self) -> list[dict]:
        verdicts, self.verdicts = self.verdicts, []
        return verdicts
