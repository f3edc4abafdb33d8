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

__all__ = ["CallerTurns"]


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
