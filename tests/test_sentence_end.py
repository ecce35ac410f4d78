"""Where a section may end once past its target: after a whole sentence, never inside an
abbreviation, a number or a list marker, in English and in Spanish."""

from __future__ import annotations

import pytest

from services.common.sentence_end import SentenceStop, ends_sentence


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
