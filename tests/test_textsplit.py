"""mediastream.playback.textsplit: long replies cut at sentence ends and packed up to max_chars, losslessly."""

from __future__ import annotations

import random

import pytest

from mediastream.playback.textsplit import DEFAULT_MAX_CHARS, SentenceStream, split_text


def check(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    pieces = split_text(text, max_chars)
    assert "".join(pieces) == text
    assert all(0 < len(piece) <= max_chars for piece in pieces)
    return pieces


def test_short_text_is_one_piece_unchanged():
    assert split_text("Short answer.") == ["Short answer."]
    assert split_text("x" * 320) == ["x" * 320]


@pytest.mark.parametrize("text", ["", "   ", "   \n  ", "\t"])
def test_blank_text_gives_nothing(text):
    assert split_text(text) == []


def test_splits_on_sentences_and_packs_them():
    text = " ".join(f"This is sentence number {i} with some filler words." for i in range(12))
    pieces = check(text)
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.rstrip().endswith(".")  # every piece ends where a speaker pauses
        assert not piece[0].isspace()
    # Stripped of their boundary whitespace and re-joined with one space, the pieces are the text.
    assert " ".join(piece.strip() for piece in pieces) == text


def test_packs_short_sentences_instead_of_one_per_piece():
    pieces = check(" ".join(["Yes."] * 100))
    assert len(pieces) < 5


def test_packing_is_greedy_up_to_the_limit():
    sentence = "Abcdefghi. "  # 11 characters
    pieces = check(sentence * 10, max_chars=33)
    assert pieces[:3] == [sentence * 3] * 3


def test_long_url_is_hard_cut_losslessly():
    url = "https://example.com/" + "a" * 900
    pieces = check(url)
    assert len(pieces) == 3 and len(pieces[0]) == 320


def test_dots_inside_tokens_do_not_end_sentences():
    text = "It costs $3.50 at example.com today. " * 20
    pieces = check(text, max_chars=100)
    assert all(piece.endswith("today. ") for piece in pieces)


def test_over_long_sentence_breaks_at_whitespace():
    words = " ".join(f"word{i}" for i in range(200))  # ~1300 characters, no terminator
    pieces = check(words, max_chars=100)
    for piece in pieces[:-1]:
        assert piece.endswith(" ")  # never cut inside a word
        assert not piece.startswith(" ")


def test_over_long_sentence_prefers_newlines():
    text = ("alpha beta gamma " * 3).strip() + "\n" + "delta epsilon zeta eta theta iota kappa"
    pieces = check(text + " " + text, max_chars=70)
    assert pieces[0].endswith("\n")


def test_buffered_sentences_are_flushed_before_a_hard_split():
    text = "Hi there. " + "x" * 50 + " done."
    pieces = check(text, max_chars=30)
    assert pieces[0] == "Hi there. "


@pytest.mark.parametrize(
    "opening",
    [".NET handles this one. ", "... so here is the long answer. ", "? Did you mean the other account? "],
)
def test_leading_punctuation_stays_with_its_sentence(opening):
    tail = " ".join(f"Sentence {i} adds a few filler words here." for i in range(12))
    pieces = check(opening + tail)
    assert pieces[0].startswith(opening.strip()[:5])
    assert " ".join(piece.strip() for piece in pieces) == opening + tail


def test_trailing_punctuation_only_run_joins_the_last_sentence():
    text = "One sentence here. " * 30 + "!!!"
    pieces = check(text)
    assert pieces[-1].endswith(". !!!")


def test_cjk_sentence_punctuation():
    text = "".join(f"这是第{i}个句子。" for i in range(80))
    pieces = check(text)
    assert len(pieces) > 1
    assert all(piece.endswith("。") for piece in pieces)


def test_lossless_and_bounded_on_random_text():
    rng = random.Random(7)
    alphabet = ["word", "a", "https://x.io/" + "q" * 40, ".", "!", "?", "。", " ", "  ", "\n", "...", "Hello"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        max_chars = rng.randint(5, 120)
        if text.strip():
            check(text, max_chars)


def test_max_chars_must_be_positive():
    with pytest.raises(ValueError):
        split_text("Hello.", 0)


# --- SentenceStream: a reply streamed token by token -------------------------------------------------------


def _stream(tokens, **options):
    stream = SentenceStream(**options)
    pieces = [piece for token in tokens for piece in stream.feed(token)]
    return pieces + stream.flush()


def _tokens(text, size=3):
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_stream_sends_the_first_clause_on_its_own_then_whole_sentences():
    text = "Sure, I can help you with that. Which day, and what time, suits you? Thanks."
    assert _stream(_tokens(text)) == ["Sure,", "I can help you with that.", "Which day, and what time, suits you?", "Thanks."]


def test_stream_first_clause_is_given_out_as_soon_as_the_space_after_it_arrives():
    stream = SentenceStream()
    assert stream.feed("Sure") == []
    assert stream.feed(",") == []  # "1,000" must not be cut: a clause ends only before whitespace
    assert stream.feed(" I") == ["Sure,"]
    assert stream.feed(" can.") == []
    assert stream.feed(" More") == ["I can."]


def test_stream_first_clause_must_be_long_enough():
    assert _stream(_tokens("Oh, well, I see. Yes.")) == ["Oh, well,", "I see.", "Yes."]
    assert _stream(_tokens("Oh, I see. Yes, fine.")) == ["Oh, I see.", "Yes, fine."]


def test_stream_numbers_with_commas_are_not_cut():
    assert _stream(_tokens("It costs 1,250 dollars, plus tax.")) == ["It costs 1,250 dollars,", "plus tax."]


def test_stream_can_cut_at_sentences_only():
    text = "Sure, I can help you with that. Anything else?"
    assert _stream(_tokens(text), first_clause_chars=None) == ["Sure, I can help you with that.", "Anything else?"]


def test_stream_first_clause_rule_survives_a_silent_tool_round():
    stream = SentenceStream()
    assert stream.flush() == []  # a round that only called a tool said nothing
    assert stream.feed("Done, your table is booked. ") == ["Done,", "your table is booked."]


def test_stream_keeps_every_word_and_respects_max_chars():
    rng = random.Random(7)
    words = ["a", "bb", "ccc,", "dddd.", "e;", "ffff!", "1,000", "x?"]
    for _ in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        pieces = _stream(_tokens(text, rng.randint(1, 9)), max_chars=40)
        assert " ".join(pieces).split() == text.split()
        assert all(0 < len(piece) <= 40 for piece in pieces)
