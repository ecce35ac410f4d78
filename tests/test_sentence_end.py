"""Where a section may end once past its target: after a whole sentence, never inside an
abbreviation, a number or a list marker, in English and in Spanish; and how its last sentences
are held back so a section cut at its hard cap still ends on a whole sentence."""

from __future__ import annotations

import pytest

from services.common.sentence_end import MAX_HELD_CHARS, SentenceStop, SentenceTail, ends_sentence


@pytest.mark.parametrize(
    ("text", "following", "language"),
    [
        ("Bikes help.", " They", "en"),
        ("Bikes help!", "\n\n", "en"),
        ('He said "go."', " Then", "en"),
        ("Prices rose in 2023.", " Then", "en"),
        ("Bikes help.\n\n", "The", "en"),
        ("Las bicis ayudan.", " Luego", "es"),
        ("¿Cuánto cuesta?", " Poco", "es"),
    ],
)
def test_a_sentence_end(text: str, following: str, language: str) -> None:
    assert ends_sentence(text, following, language)


@pytest.mark.parametrize(
    ("text", "following", "language"),
    [
        ("It costs 3.", "5 euros", "en"),  # no space after the point: a decimal
        ("Bikes help", " a lot", "en"),
        ("Use a lock, e.g.", " a D-lock", "en"),
        ("Ask Dr.", " Smith", "en"),
        ("Written by J.", " R. R. Tolkien", "en"),
        ("Steps:\n1.", " Unlock", "en"),
        ("Habló el Sr.", " García", "es"),
        ("Frutas, p. ej.", " manzanas", "es"),
        ("Ver la pág.", " 4", "es"),
        ("Bikes help:", " cheap", "en"),
    ],
)
def test_not_a_sentence_end(text: str, following: str, language: str) -> None:
    assert not ends_sentence(text, following, language)


def test_the_stop_waits_for_the_target_then_the_sentence_end() -> None:
    stop = SentenceStop(target_tokens=10)
    assert not stop.should_stop(9, "Bikes help.", " They")
    assert stop.should_stop(10, "Bikes help.", " They")
    assert not stop.should_stop(11, "Bikes help", " and")


def feed_all(tail: SentenceTail, deltas: list[str]) -> list[str]:
    return [tail.feed(produced, delta) for produced, delta in enumerate(deltas)]


def test_before_the_hold_every_delta_goes_out_as_it_comes() -> None:
    tail = SentenceTail(hold_from_tokens=10)
    assert feed_all(tail, ["Bikes", " help", " cities"]) == ["Bikes", " help", " cities"]
    assert tail.finish(cut=True) == ""


def test_past_the_hold_text_goes_out_a_sentence_or_a_line_at_a_time() -> None:
    tail = SentenceTail(hold_from_tokens=1)
    released = feed_all(
        tail, ["Bikes", " help.", " Docks", " cost", " money,", " e.g.", " vans.\n", "- Fees"]
    )
    # "help." ends a sentence once the space after it arrives; "e.g." does not; a line break
    # releases what precedes it.
    assert released == ["Bikes", "", " help.", "", "", "", " Docks cost money, e.g. vans.", ""]
    assert tail.held == "\n- Fees"
    assert tail.finish(cut=False) == "\n- Fees"


def test_a_cut_after_a_whole_sentence_drops_the_unfinished_one() -> None:
    tail = SentenceTail(hold_from_tokens=0)
    released = "".join(feed_all(tail, ["El", " precio", " sube.", " Es", " el", " que", " quier"]))
    assert released == "El precio sube."
    assert tail.finish(cut=True) == ""


def test_a_cut_with_no_sentence_end_since_the_hold_ends_on_a_whole_word() -> None:
    tail = SentenceTail(hold_from_tokens=2)
    released = "".join(feed_all(tail, ["and", " the", " docks", " and", " the", " va"]))
    assert released == "and the"
    assert tail.finish(cut=True) == " docks and the"


def test_a_run_on_is_held_no_longer_than_the_bound() -> None:
    tail = SentenceTail(hold_from_tokens=0)
    word = " " + "x" * 99
    released = ""
    for produced in range(30):  # 3,000 characters, no sentence end, no line break
        released += tail.feed(produced, word)
        assert len(tail.held) <= MAX_HELD_CHARS
    # What went out ends on a whole word, and nothing was lost or reordered.
    assert released and released.endswith("x" * 99) and not released.endswith(word + "x")
    assert released + tail.finish(cut=False) == word * 30


def test_a_sentence_that_ended_just_before_the_hold_is_where_a_cut_ends() -> None:
    # The paragraph's full stop and line break come in one delta, before the hold begins.
    tail = SentenceTail(hold_from_tokens=2)
    released = "".join(feed_all(tail, ["Fees", " rose.\n\n", "And", " the", " va"]))
    assert released == "Fees rose.\n\n"
    assert tail.finish(cut=True) == ""
