"""The streaming scaffolding filter, delta by delta: what it drops, what it holds back and for
how long, and that ordinary prose passes through unchanged."""

from __future__ import annotations

import pytest

from services.generator.scaffolding import ScaffoldingFilter

TITLES = ("City bike share", "Executive summary")


def run(deltas: list[str], titles: tuple[str, ...] = TITLES) -> tuple[list[str], list[str]]:
    scaffolding = ScaffoldingFilter(titles)
    released = [scaffolding.feed(d) for d in deltas] + [scaffolding.flush()]
    assert "".join(released) == scaffolding.text
    return released, scaffolding.dropped


@pytest.mark.parametrize(
    ("deltas", "text"),
    [
        (["<summary>", "Bikes", " help.</summary>"], "Bikes help."),
        (["Bikes <", "/sum", "mary> help."], "Bikes help."),
        (
            ["<bldngr:title lang='en' xmlns='http://x/y'>", "Bikes help.", "</bldngr:title>"],
            "Bikes help.",
        ),
        (["Bikes help.<|im_end|>"], "Bikes help."),
        (["<b>Bikes</b> help."], "Bikes help."),
        (["<outline>\n", "Bikes help."], "Bikes help."),
        (["Bikes < / summary > help."], "Bikes help."),
    ],
)
def test_tags_are_dropped_even_when_split_across_deltas(deltas: list[str], text: str) -> None:
    released, dropped = run(deltas)
    assert "".join(released) == text
    assert dropped


@pytest.mark.parametrize(
    "evasion",
    [
        "＜/brief＞",
        "﹤/brief﹥",
        "<\u2060/brief>",
        "<\ufeff/brief>",
        "&#60;/brief>",
        "&lt;/brief&gt;",
        "&#x3C;/brief&#x3E;",
    ],
)
def test_look_alike_delimiters_are_dropped_too(evasion: str) -> None:
    released, dropped = run(["Bikes help. ", evasion[:2], evasion[2:], " More."])
    assert "".join(released) == "Bikes help. More."
    assert dropped


@pytest.mark.parametrize(
    "prose",
    [
        "If a < b and b > c, then a < c.",
        "Costs fell 3<4 ways; AT&T and R&D agree.",
        "Use x &amp; y, or a <- b in R.",
        "Loops like for (i = 0; i <n; i++) are fine.",  # `<n; i++)` never closes
    ],
)
def test_ordinary_angle_brackets_and_ampersands_pass_through(prose: str) -> None:
    released, dropped = run([prose[i : i + 3] for i in range(0, len(prose), 3)])
    assert "".join(released) == prose
    assert dropped == []


def test_only_a_possible_tag_start_is_held_back() -> None:
    scaffolding = ScaffoldingFilter(TITLES)
    assert scaffolding.feed("Bikes are cheap. They ") == "Bikes are cheap. They "
    assert scaffolding.feed("cost a <") == "cost a "
    assert scaffolding.holding
    assert scaffolding.feed(" b") == "< b"  # a space after `<`: not a tag
    assert not scaffolding.holding


@pytest.mark.parametrize(
    ("deltas", "text"),
    [
        (
            ["Here's a two-paragraph", " continuation of the report:\n\n", "Bikes help."],
            "Bikes help.",
        ),
        (["Sure! Here is the section:\n", "Bikes help."], "Bikes help."),
        (["[Executive", " Summary]\n\n", "Bikes help."], "Bikes help."),
        (["Executive summary\n", "Bikes help."], "Bikes help."),
        (["## City bike share\n\n", "Bikes help."], "Bikes help."),
        (["**Executive Summary**\n", "Bikes help."], "Bikes help."),
        (["Executive summary: ", "Bikes help."], "Bikes help."),
        (["<summary>\nExecutive summary\n", "Bikes help."], "Bikes help."),
        (["Aquí tienes la sección:\n", "Las bicis ayudan."], "Las bicis ayudan."),
        (
            ['La parte "Riego" de un informe', ' titulado "Bicis".\n\n', "Las bicis ayudan."],
            "Las bicis ayudan.",
        ),
        (["Write two paragraphs in English for", ' the part "Why".\n', "Bikes help."], "Bikes help."),
    ],
)
def test_openings_that_announce_or_repeat_a_title_are_dropped(deltas: list[str], text: str) -> None:
    released, dropped = run(deltas)
    assert "".join(released) == text
    assert dropped


@pytest.mark.parametrize(
    "prose",
    [
        "Executive summaries are short.\nThey say what matters.",
        "City bike share schemes began in Amsterdam.",
        "There are three kinds of dock:\n- fixed\n- mobile",
        "Here in Seville, bikes are everywhere.",
    ],
)
def test_openings_that_are_the_text_stay(prose: str) -> None:
    released, dropped = run([prose[:5], prose[5:]])
    assert "".join(released) == prose
    assert dropped == []


def test_an_opening_is_held_only_while_it_could_be_scaffolding() -> None:
    scaffolding = ScaffoldingFilter(TITLES)
    assert scaffolding.feed("Exec") == ""  # could become the title
    assert scaffolding.feed("utive summaries are") == "Executive summaries are"
    other = ScaffoldingFilter(TITLES)
    assert other.feed("Bikes") == "Bikes"  # cannot begin any opening: released at once


def test_a_title_alone_at_the_end_of_the_stream_is_still_an_echo() -> None:
    released, dropped = run(["Executive summary"])
    assert "".join(released) == ""
    assert dropped == ["Executive summary"]
