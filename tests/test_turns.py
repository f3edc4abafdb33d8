"""Caller-turn normalisation: one speech start per caller utterance (pure, no asyncio)."""

from mediastream.turns import CallerTurns


def fire_count(turns: CallerTurns, steps: list[tuple[str, str]]) -> int:
    fired = 0
    for kind, text in steps:
        if kind == "partial":
            fired += turns.on_partial(text)
        elif kind == "final":
            fired += turns.on_final(text)
        elif kind == "start":
            fired += turns.on_backend_start()
        elif kind == "vad_start":
            fired += turns.on_vad_start()
        elif kind == "vad_end":
            turns.on_vad_end()
    return fired


def test_partials_start_and_final_fire_one_start_per_utterance():
    turns = CallerTurns()
    assert fire_count(turns, [("partial", "hel"), ("partial", "hello"), ("start", "")]) == 1
    assert turns.in_utterance
    assert fire_count(turns, [("final", "hello there")]) == 0
    assert turns.utterances == 1 and not turns.in_utterance
    # A lone final (no partial, no start) still fires one speech start first.
    assert turns.on_final("lone final") is True
    assert turns.utterances == 2 and not turns.in_utterance
    # A provider start then a partial: one more.
    assert fire_count(turns, [("start", ""), ("partial", "again")]) == 1
    assert turns.utterances == 3


def test_local_vad_start_opens_and_backend_events_join_it():
    turns = CallerTurns()
    assert turns.on_vad_start() is True
    assert fire_count(turns, [("start", ""), ("partial", "book a"), ("vad_end", "")]) == 0
    assert turns.on_final("book a table") is False  # the start already fired
    assert turns.utterances == 1
    assert turns.on_vad_start() is True  # the next utterance fires again


def test_vad_end_does_not_end_the_utterance_when_a_final_is_coming():
    turns = CallerTurns(finals_expected=True)
    turns.on_vad_start()
    turns.on_vad_end()
    assert turns.in_utterance
    # Late backend events for the same words do not fire again.
    assert turns.on_backend_start() is False
    assert turns.on_partial("late") is False
    assert turns.on_final("late words") is False
    assert turns.utterances == 1


def test_new_local_speech_after_a_vad_end_is_a_new_utterance_even_without_a_final():
    turns = CallerTurns()
    turns.on_vad_start()  # e.g. a cough the backend never finalises
    turns.on_vad_end()
    assert turns.on_vad_start() is True
    assert turns.utterances == 2
    assert turns.on_vad_start() is False  # still speaking: nothing more


def test_without_finals_the_vad_end_closes_the_utterance():
    turns = CallerTurns(finals_expected=False)
    assert turns.on_vad_start() is True
    turns.on_vad_end()
    assert not turns.in_utterance
    assert turns.on_vad_start() is True
    assert turns.utterances == 2


def test_empty_transcripts_neither_open_nor_fire():
    turns = CallerTurns()
    assert turns.on_partial("  ") is False
    assert turns.on_final("") is False
    assert turns.utterances == 0
    turns.on_backend_start()
    assert turns.on_final("") is False  # closes the open utterance silently
    assert not turns.in_utterance
    assert turns.on_partial("next") is True


def test_a_late_final_belongs_to_the_utterance_it_transcribes():
    # The caller pauses between two sentences; the first transcript arrives after
    # the second sentence began. Neither transcript is a new utterance.
    turns = CallerTurns(finals_expected=True)
    assert turns.on_vad_start() is True
    turns.on_vad_end()
    assert turns.on_vad_start() is True  # the second sentence
    assert turns.on_final("first sentence") is False
    assert turns.in_utterance  # the second is still open
    assert turns.on_final("second sentence") is False
    assert turns.utterances == 2
    assert turns.on_vad_start() is True  # and a third one fires again
