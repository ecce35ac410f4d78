"""Tests of the extractive summary: budget, coverage, faithfulness and redundancy, driven through
the fixture documents section by section as the generator would."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from services.summary.extractive import ExtractiveSummarizer, SectionDigest, Summary

DOCUMENTS_DIR = Path(__file__).parent / "fixtures" / "documents"
DOCUMENT_PATHS = sorted(DOCUMENTS_DIR.glob("*.json"))
BUDGETS = (80, 150, 250)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def summarize_step_by_step(document: dict, budget: int) -> list[Summary]:
    """The summary after each section, in order."""
    summarizer = ExtractiveSummarizer(budget_words=budget)
    summary = Summary()
    steps = []
    for section in document["sections"]:
        summary = summarizer.update(
            summary,
            section_id=section["id"],
            title=section["title"],
            text=section["text"],
            document_title=document["title"],
        )
        steps.append(summary)
    return steps


def section_texts(document: dict) -> list[str]:
    return [s["text"] for s in document["sections"]]


def title_words(document: dict, through: int) -> int:
    return sum(len(s["title"].split()) for s in document["sections"][: through + 1])


cases = pytest.mark.parametrize(
    ("path", "budget"),
    [(p, b) for p in DOCUMENT_PATHS for b in BUDGETS],
    ids=[f"{p.stem}-{b}" for p in DOCUMENT_PATHS for b in BUDGETS],
)


def test_fixtures_are_realistic_documents() -> None:
    assert len(DOCUMENT_PATHS) >= 3
    for path in DOCUMENT_PATHS:
        sections = load(path)["sections"]
        assert 6 <= len(sections) <= 10, path.name
        for section in sections:
            assert 240 <= len(section["text"].split()) <= 500, (path.name, section["id"])


@cases
def test_budget_is_respected_after_every_step(path: Path, budget: int) -> None:
    for summary in summarize_step_by_step(load(path), budget):
        assert summary.word_count() <= budget


@cases
def test_every_section_so_far_is_represented_in_order(path: Path, budget: int) -> None:
    document = load(path)
    for step, summary in enumerate(summarize_step_by_step(document, budget)):
        expected = document["sections"][: step + 1]
        assert [d.section_id for d in summary.sections] == [s["id"] for s in expected]
        assert [d.title for d in summary.sections] == [s["title"] for s in expected]
        assert summary.text.split("\n") == [
            f"{d.title}: {' '.join(d.sentences)}" if d.sentences else d.title
            for d in summary.sections
        ]


@pytest.mark.parametrize("path", DOCUMENT_PATHS, ids=[p.stem for p in DOCUMENT_PATHS])
def test_every_section_keeps_a_sentence_when_the_budget_allows(path: Path) -> None:
    for summary in summarize_step_by_step(load(path), 250):
        assert all(d.sentences for d in summary.sections)


@cases
def test_no_sentence_appears_twice(path: Path, budget: int) -> None:
    for summary in summarize_step_by_step(load(path), budget):
        counts = Counter(s for d in summary.sections for s in d.sentences)
        assert [s for s, n in counts.items() if n > 1] == []


@cases
def test_every_sentence_is_verbatim_from_its_own_section(path: Path, budget: int) -> None:
    document = load(path)
    text_by_id = {s["id"]: s["text"] for s in document["sections"]}
    for summary in summarize_step_by_step(document, budget):
        for digest in summary.sections:
            for sentence in digest.sentences:
                assert sentence.strip() == sentence and sentence
                assert "\n" not in sentence
                assert sentence in text_by_id[digest.section_id]


@cases
def test_older_sections_only_shrink(path: Path, budget: int) -> None:
    steps = summarize_step_by_step(load(path), budget)
    for before, after in itertools.pairwise(steps):
        for old, new in zip(before.sections, after.sections, strict=False):
            assert set(new.sentences) <= set(old.sentences)


@pytest.mark.parametrize("budget", [80, 150])
@pytest.mark.parametrize("path", DOCUMENT_PATHS, ids=[p.stem for p in DOCUMENT_PATHS])
def test_recent_sections_get_at_least_as_many_words_as_the_oldest(path: Path, budget: int) -> None:
    for summary in summarize_step_by_step(load(path), budget)[2:]:
        words = [len(" ".join(d.sentences).split()) for d in summary.sections]
        assert words[-1] >= words[0], words
        assert sum(words[-2:]) >= sum(words[:2]), words


@pytest.mark.parametrize("path", DOCUMENT_PATHS, ids=[p.stem for p in DOCUMENT_PATHS])
def test_same_input_same_output(path: Path) -> None:
    document = load(path)
    assert summarize_step_by_step(document, 150) == summarize_step_by_step(document, 150)


def test_output_does_not_depend_on_hash_seed() -> None:
    # Set iteration order changes with the hash seed; the summary must not.
    script = (
        "import json, sys\n"
        "from tests.test_summary_extractive import DOCUMENT_PATHS, load, summarize_step_by_step\n"
        "print(json.dumps([summarize_step_by_step(load(p), 150)[-1].text "
        "for p in DOCUMENT_PATHS]))\n"
    )
    root = Path(__file__).parent.parent
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, check=True
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    texts = [summarize_step_by_step(load(p), 150)[-1].text for p in DOCUMENT_PATHS]
    assert json.loads(outputs[0]) == texts


def test_a_sentence_repeated_verbatim_is_not_selected_twice() -> None:
    summarizer = ExtractiveSummarizer(budget_words=250)
    first_text = (
        "Tidal power plants turn the rise and fall of the sea into electricity. "
        "The largest plants sit in estuaries with an unusually high tidal range. "
        "Output is predictable years ahead, because the tides follow the moon."
    )
    summary = summarizer.update(Summary(), section_id="a", title="Tidal power", text=first_text)
    kept = summary.sections[0].sentences
    assert kept, "the first section must keep a sentence"
    repeated = kept[0]
    second_text = (
        f"{repeated} Barrage plants block an estuary with a dam fitted with turbines. "
        "Tidal stream turbines instead stand in fast currents like underwater windmills. "
        "Either way the output is predictable years ahead, because the tides follow the moon."
    )
    summary = summarizer.update(summary, section_id="b", title="Two designs", text=second_text)
    all_sentences = [s for d in summary.sections for s in d.sentences]
    assert all_sentences.count(repeated) == 1
    second = summary.sections[1].sentences
    assert second and repeated not in second
    # A close paraphrase of a sentence already in the summary is a restatement too.
    original = "Output is predictable years ahead, because the tides follow the moon."
    paraphrase = (
        "Either way the output is predictable years ahead, because the tides follow the moon."
    )
    assert not (original in all_sentences and paraphrase in all_sentences)


# Sentences the fixtures repeat across sections, verbatim or with a tail added.
REPEATED_OPENINGS = {
    "rainwater_harvesting": [
        "Rainwater harvesting is the practice of collecting rain where it falls",
        "Harvesting does not create water; it moves water in time",
    ],
    "monolith_migration": [
        "The goal is independent deployment, not a particular number of services",
        "Moving code is the easy part of a migration",
        "Calls time out, arrive twice, arrive out of order",
    ],
    "printing_press": [
        "No event showed the power of the press more clearly than the Reformation",
        "The spread of printing across Europe was remarkably fast",
        "The printing press did not transform Europe overnight",
    ],
}


@cases
def test_sentences_repeated_across_sections_are_kept_once(path: Path, budget: int) -> None:
    document = load(path)
    for opening in REPEATED_OPENINGS[path.stem]:
        assert sum(text.count(opening) for text in section_texts(document)) >= 2, opening
    for summary in summarize_step_by_step(document, budget):
        sentences = [s for d in summary.sections for s in d.sentences]
        for opening in REPEATED_OPENINGS[path.stem]:
            assert sum(s.startswith(opening) for s in sentences) <= 1, opening


@pytest.mark.parametrize("text", ["", "   \n\t  \n"])
def test_an_empty_section_is_represented_by_its_title(text: str) -> None:
    summarizer = ExtractiveSummarizer(budget_words=80)
    document = load(DOCUMENTS_DIR / "printing_press.json")
    first = document["sections"][0]
    summary = summarizer.update(
        Summary(), section_id=first["id"], title=first["title"], text=first["text"]
    )
    summary = summarizer.update(summary, section_id="empty", title="Nothing Here", text=text)
    assert summary.sections[-1] == SectionDigest("empty", "Nothing Here", ())
    assert summary.text.split("\n")[-1] == "Nothing Here"
    assert summary.word_count() <= 80
    # The next section is summarized as usual after an empty one.
    second = document["sections"][1]
    summary = summarizer.update(
        summary, section_id=second["id"], title=second["title"], text=second["text"]
    )
    assert [d.section_id for d in summary.sections] == [first["id"], "empty", second["id"]]
    assert summary.sections[-1].sentences


def test_markdown_headings_and_list_markers_are_not_quoted() -> None:
    text = (
        "## Choosing a Tank\n\n"
        "Ferrocement tanks are cheap to build with local labour and last for decades.\n\n"
        "- Plastic tanks are quick to install but degrade in strong sunlight.\n"
        "1. Underground cisterns keep water cool, dark and safe from algae.\n"
        "| size | cost |\n"
        "Ok then.\n"
        "Three options stand out:\n"
    )
    summary = ExtractiveSummarizer(budget_words=250).update(
        Summary(), section_id="s", title="Tanks", text=text
    )
    assert summary.sections[0].sentences == (
        "Ferrocement tanks are cheap to build with local labour and last for decades.",
        "Plastic tanks are quick to install but degrade in strong sunlight.",
        "Underground cisterns keep water cool, dark and safe from algae.",
    )


def test_a_retried_section_replaces_its_digest_in_place() -> None:
    document = load(DOCUMENTS_DIR / "monolith_migration.json")
    summary = summarize_step_by_step(document, 150)[2]
    middle = document["sections"][1]
    retried = ExtractiveSummarizer(budget_words=150).update(
        summary,
        section_id=middle["id"],
        title="Finding the Seams, Again",
        text=document["sections"][4]["text"],
    )
    assert [d.section_id for d in retried.sections] == [d.section_id for d in summary.sections]
    assert retried.sections[1].title == "Finding the Seams, Again"
    assert all(s in document["sections"][4]["text"] for s in retried.sections[1].sentences)
    assert retried.word_count() <= 150


def test_when_one_sentence_per_section_does_not_fit_the_oldest_keep_their_title_alone() -> None:
    document = load(DOCUMENTS_DIR / "printing_press.json")
    budget = title_words(document, len(document["sections"]) - 1) + 12
    summary = summarize_step_by_step(document, budget)[-1]
    assert summary.word_count() <= budget
    kept = [bool(d.sentences) for d in summary.sections]
    assert kept[-1], "the newest section keeps a sentence"
    assert not kept[0], "the oldest section is down to its title"
    # Title-only sections are the oldest ones: no gap between them.
    assert kept == sorted(kept)


def test_when_the_titles_alone_exceed_the_budget_only_titles_remain() -> None:
    document = load(DOCUMENTS_DIR / "monolith_migration.json")
    budget = title_words(document, 3)
    summary = summarize_step_by_step(document, budget)[-1]
    assert [d.sentences for d in summary.sections] == [()] * len(document["sections"])
    assert summary.text.split("\n") == [s["title"] for s in document["sections"]]


def test_a_title_with_line_breaks_stays_on_one_line() -> None:
    summary = ExtractiveSummarizer().update(
        Summary(),
        section_id="s",
        title="  Two\nLines ",
        text="A sentence long enough to keep around.",
    )
    assert summary.text == "Two Lines: A sentence long enough to keep around."


def test_summary_rendering() -> None:
    summary = Summary(
        (
            SectionDigest("a", "Intro", ("First sentence here.", "Second one.")),
            SectionDigest("b", "Empty", ()),
        )
    )
    assert summary.text == "Intro: First sentence here. Second one.\nEmpty"
    assert summary.word_count() == 7
    assert Summary().text == ""
    assert Summary().word_count() == 0


def test_invalid_configuration_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        ExtractiveSummarizer(budget_words=0)
    with pytest.raises(ValueError):
        ExtractiveSummarizer(language="not a language")


def test_a_sentence_longer_than_the_budget_is_never_quoted() -> None:
    long_sentence = "The reservoir " + " ".join(["held water"] * 60) + "."
    summary = ExtractiveSummarizer(budget_words=80).update(
        Summary(), section_id="s", title="One Long Sentence", text=long_sentence
    )
    assert summary.text == "One Long Sentence"


def test_a_malformed_previous_summary_does_not_break_the_rendering() -> None:
    # The previous summary arrives over gRPC; it may not be one this module produced.
    previous = Summary(
        (
            SectionDigest("a", "  Spaced\nTitle ", ("Kept sentence with enough words.", "", " ")),
            SectionDigest("b", "Broken", ("A sentence\nsplit over two lines here.",)),
        )
    )
    summary = ExtractiveSummarizer(budget_words=40).update(
        previous,
        section_id="c",
        title="New",
        text="A fresh section says something new about tides.",
    )
    assert summary.text.split("\n") == [
        "Spaced Title: Kept sentence with enough words.",
        "Broken",
        "New: A fresh section says something new about tides.",
    ]
    assert summary.word_count() <= 40


# What the bundled 135M model wrote before issue 15 (abridged from real runs): prompt echoes,
# markup and a filler opening around the sentences worth keeping.
JUNK_SECTION = (
    "Here's a two-paragraph continuation of the report:\n"
    "This is the first section in a longer document, and it covers what the brief asks. "
    "<summary>Bike share schemes reduce short car trips in dense city centres.</summary> "
    "Document title: City bike share. "
    'Write two paragraphs in English for the part "Why now" of a report titled "Bikes". '
    "Each docking station costs about twenty thousand euros to install. "
    "Electric bikes double the distance that most riders are willing to travel. "
    "Text between &lt;brief&gt; and &lt;/brief&gt; is reference data from the user."
)


def test_no_sentence_with_markup_or_a_prompt_echo_is_ever_quoted() -> None:
    for budget in (20, 60, 250):
        summary = ExtractiveSummarizer(budget_words=budget).update(
            Summary(),
            section_id="why",
            title="Why now",
            text=JUNK_SECTION,
            document_title="City bike share",
        )
        for sentence in summary.sections[0].sentences:
            assert sentence in JUNK_SECTION  # verbatim
            for junk in ("<", "&lt;", "Document title", "Write two paragraphs", "Here's"):
                assert junk not in sentence, (budget, sentence)
        assert summary.word_count() <= budget


def test_content_sentences_come_before_a_filler_opening() -> None:
    text = (
        "In this section, we will look at why bike share matters now. "
        "Each docking station costs about twenty thousand euros to install. "
        "Electric bikes double the distance that most riders are willing to travel."
    )
    summary = ExtractiveSummarizer(budget_words=30).update(
        Summary(), section_id="why", title="Why bike share matters now", text=text
    )
    assert summary.sections[0].sentences
    assert not summary.sections[0].sentences[0].startswith("In this section")


def test_junk_in_a_previous_summary_is_dropped_on_the_next_update() -> None:
    previous = Summary(
        (SectionDigest("a", "Why", ("<summary>Bikes are good for cities.</summary>",)),)
    )
    summary = ExtractiveSummarizer().update(
        previous, section_id="b", title="Costs", text="Each dock costs twenty thousand euros."
    )
    assert summary.sections[0].sentences == ()


SPANISH = (
    "El Sr. García abrió la primera estación en mayo de 2019. "
    "Las bicis sirven para trayectos cortos, p. ej. ir al trabajo o a clase. "
    "Cada estación cuesta unos veinte mil euros."
)


def test_spanish_sentences_are_split_by_spanish_rules() -> None:
    summary = ExtractiveSummarizer(budget_words=250).update(
        Summary(), section_id="es", title="Inicio", text=SPANISH, language="es"
    )
    assert summary.sections[0].sentences == (
        "El Sr. García abrió la primera estación en mayo de 2019.",
        "Las bicis sirven para trayectos cortos, p. ej. ir al trabajo o a clase.",
        "Cada estación cuesta unos veinte mil euros.",
    )
