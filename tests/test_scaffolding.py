"""The streaming scaffolding filter, delta by delta: what it drops, what it holds back and for
how long, and that ordinary prose passes through unchanged."""

from __future__ import annotations

import pytest

from services.generator.scaffolding import (
    MAX_ECHO_SENTENCE_CHARS,
    MAX_PREAMBLE_CHARS,
    ScaffoldingFilter,
)

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
        (["Title: Executive", " Summary\n\n", "Bikes help."], "Bikes help."),
        (["Title: Why cities share bikes\n", "Bikes help."], "Bikes help."),  # invented
        (["Título: Riego y plagas\n", "Riega al alba."], "Riega al alba."),
        (["Aquí tienes la sección:\n", "Las bicis ayudan."], "Las bicis ayudan."),
        (
            ['La parte "Riego" de un informe', ' titulado "Bicis".\n\n', "Las bicis ayudan."],
            "Las bicis ayudan.",
        ),
        (
            ["Write two paragraphs in English for", ' the part "Why".\n', "Bikes help."],
            "Bikes help.",
        ),
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
        "There are three kinds of dock: fixed, mobile and virtual.\n- fixed",
        "Here in Seville, bikes are everywhere.",
        'The report "Cycling in Cities" (2019) found that docks pay off.',  # not our title
        "The report found that docks pay off. In this city, bikes are cheap.",
        'La parte más cara es el "muelle" de carga.',
        "Title deeds: the city keeps them.\nBikes help.",
    ],
)
def test_openings_that_are_the_text_stay(prose: str) -> None:
    released, dropped = run([prose[:5], prose[5:]])
    assert "".join(released) == prose
    assert dropped == []


def test_a_short_first_line_ending_with_a_colon_is_a_preamble_even_when_it_is_not() -> None:
    # The trade-off of the any-language preamble rule (MAX_PREAMBLE_CHARS): a section that
    # really opens with a colon line loses that line; the list after it stays.
    released, dropped = run(["There are three kinds of dock:", "\n- fixed\n- mobile"])
    assert "".join(released) == "- fixed\n- mobile"
    assert dropped == ["There are three kinds of dock:\n"]


def test_an_opening_is_held_only_while_it_could_be_scaffolding() -> None:
    scaffolding = ScaffoldingFilter(TITLES)
    assert scaffolding.feed("Exec") == ""  # could become the title
    # ... or a preamble line ending with a colon, until its first sentence end.
    assert scaffolding.feed("utive summaries are") == ""
    assert scaffolding.feed(" short. They") == "Executive summaries are short. They"
    assert not scaffolding.holding
    other = ScaffoldingFilter(TITLES)
    assert other.feed("Bikes.") == "Bikes."  # a sentence end: cannot be an opening any more


def test_ordinary_openings_stream_through_at_once() -> None:
    # Each delta goes out as it comes, except the first sentence, which goes out with the delta
    # that ends it (until then it could be a preamble line ending with a colon).
    deltas = ["Bikes", " help", " cities.", " They", " cut", " traffic", " and", " noise."]
    scaffolding = ScaffoldingFilter(TITLES)
    released = [scaffolding.feed(d) for d in deltas]
    assert released == ["", "", "Bikes help cities.", *deltas[3:]]
    assert scaffolding.flush() == ""
    for opening in ("La bici", "Das Fahrrad", "The report found", "In this city"):
        scaffolding = ScaffoldingFilter(TITLES)
        assert scaffolding.feed(opening + " is old. ") == opening + " is old. "
        assert scaffolding.feed("Next") == "Next"
        assert scaffolding.dropped == []


def test_the_preamble_hold_back_is_bounded() -> None:
    # A first line with no sentence end is held only up to MAX_PREAMBLE_CHARS characters.
    scaffolding = ScaffoldingFilter(TITLES)
    released = ""
    fed = 0
    while not released:
        released += scaffolding.feed("bikes ")
        fed += len("bikes ")
    assert fed <= MAX_PREAMBLE_CHARS + len("bikes ")
    assert released == "bikes " * (fed // len("bikes "))
    assert scaffolding.dropped == []


SPANISH_TITLES = ("Un huerto en casa", "Riego y plagas")


@pytest.mark.parametrize(
    ("deltas", "text"),
    [
        # Seen on the bundled model: the request read back as a preamble, in Spanish.
        (
            ["Dos párrafos en", " español para el sig", "uiente:", "\n", "El riego es clave."],
            "El riego es clave.",
        ),
        (
            ["Dos párrafos en español para el siguiente:\n\nEl riego", " es clave."],
            "El riego es clave.",
        ),
        (["Voici la section", " :\n", "El riego es clave."], "El riego es clave."),
        # Seen in the quality bench: the request as the subject of the first sentence; the
        # rest of that sentence cannot stand alone, so the sentence goes.
        (
            [
                'La parte "Riego y pl',
                'agas" de un informe titulado "Un hue',
                'rto en casa" es una guía',
                " para regar bien.",
                " El riego por goteo ahorra agua.",
            ],
            "El riego por goteo ahorra agua.",
        ),
        (
            ['La parte "Riego y plagas" es importante.\n', "El riego por goteo ahorra agua."],
            "El riego por goteo ahorra agua.",
        ),
        (
            ['El informe titulado "Un huerto en casa" trata', " de huertos. El riego ahorra."],
            "El riego ahorra.",
        ),
        # An adverbial or a colon: the rest of the sentence is a clause of its own and stays.
        (
            ['La parte "Riego y plagas" de un informe titulado "Un huerto en casa":', " el riego"],
            "El riego",
        ),
        (
            ['En el informe titulado "Un huerto en casa", las', " plagas mandan."],
            "Las plagas mandan.",
        ),
    ],
)
def test_spanish_preambles_and_request_echoes_are_dropped(deltas: list[str], text: str) -> None:
    released, dropped = run(deltas, SPANISH_TITLES)
    assert "".join(released) == text
    assert dropped


@pytest.mark.parametrize(
    ("deltas", "text"),
    [
        (
            [
                'The report titled "City',
                ' bike share" is about',
                " how cities share bikes.",
                " Bikes help.",
            ],
            "Bikes help.",
        ),
        (
            [
                'The part "Executive summary" of the report titled "City bike share" sums',
                " up. Bikes help.",
            ],
            "Bikes help.",
        ),
        (['In the report titled "City bike share", cities', " add docks."], "Cities add docks."),
    ],
)
def test_english_request_echoes_are_dropped(deltas: list[str], text: str) -> None:
    released, dropped = run(deltas)
    assert "".join(released) == text
    assert dropped


def test_the_echo_hold_back_is_bounded() -> None:
    # A first sentence that opens like the request read back but does not end within
    # MAX_ECHO_SENTENCE_CHARS is released as it is.
    echo = 'The report titled "City bike share" is '
    scaffolding = ScaffoldingFilter(TITLES)
    released = scaffolding.feed(echo)
    fed = echo
    while not released:
        released += scaffolding.feed("long ")
        fed += "long "
    assert len(fed) <= len(echo) + MAX_ECHO_SENTENCE_CHARS + len("long ")
    assert released == fed
    assert scaffolding.dropped == []


def test_a_title_alone_at_the_end_of_the_stream_is_still_an_echo() -> None:
    released, dropped = run(["Executive summary"])
    assert "".join(released) == ""
    assert dropped == ["Executive summary"]


BRIEF = (
    "What a new engineer lacks in the first month when nobody sits nearby, and what a slow "
    "start costs the team."
)


def test_an_opening_line_that_reads_the_brief_back_is_dropped() -> None:
    # Seen with the bundled model: the brief, verbatim, as the section's first line.
    deltas = ["What a new engineer lacks", " in the first month when nobody sits nearby,"]
    deltas += [" and what a slow start costs the team.\n", "A new hire", " starts blind."]
    released, dropped = run(deltas, (*TITLES, BRIEF))
    assert "".join(released) == "A new hire starts blind."
    assert dropped == [BRIEF + "\n"]


def test_a_first_sentence_that_only_begins_like_the_brief_is_kept() -> None:
    deltas = ["What a new engineer lacks", " is context, and a buddy gives it.\n", "More."]
    released, dropped = run(deltas, (*TITLES, BRIEF))
    assert "".join(released) == "What a new engineer lacks is context, and a buddy gives it.\nMore."
    assert dropped == []


@pytest.mark.parametrize(
    ("deltas", "text"),
    [
        (  # what the bundled model wrote between two paragraphs (30 Nov)
            [
                "Bikes help.\n\nTi",
                "tle: A Bike-Share",
                " Scheme for a Mid-Sized City\nSubtitle: Transportation",
                " to Cities, 2019-2024 \n\nThe report",
                " covers buses.",
            ],
            "Bikes help.\n\n\nThe report covers buses.",
        ),
        (["Riega al alba.\n", "Título: Riego\n", "Las plagas."], "Riega al alba.\nLas plagas."),
        (["Bikes help.\n", "Title: the last line"], "Bikes help.\n"),  # dropped at the end too
    ],
)
def test_label_lines_later_in_a_section_are_dropped(deltas: list[str], text: str) -> None:
    released, dropped = run(deltas)
    assert "".join(released) == text
    assert any("itle" in d or "ítulo" in d for d in dropped), dropped


@pytest.mark.parametrize(
    "prose",
    [
        "Bikes help.\nTitle deeds matter here.\nTitles: none were issued.",
        "Bikes help.\nThe title: a question of ownership, settled in 2019.",
        "Bikes help.\n" + "Title: " + "x" * 250 + "\nMore.",  # too long for a label line
    ],
)
def test_lines_that_only_start_like_a_label_stay(prose: str) -> None:
    released, dropped = run([prose[:14], prose[14:30], prose[30:]])
    assert "".join(released) == prose
    assert dropped == []


def test_a_line_start_is_held_only_while_it_could_be_a_label() -> None:
    scaffolding = ScaffoldingFilter(TITLES)
    assert scaffolding.feed("Bikes help.\n") == "Bikes help.\n"
    assert scaffolding.feed("Ti") == ""  # could be "Title:"
    assert scaffolding.holding
    assert scaffolding.feed("des turn.") == "Tides turn."
    assert not scaffolding.holding
    assert scaffolding.feed(" More") == " More"
