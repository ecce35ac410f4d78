"""The quality scenario's measures, and one pass of it against the scripted OpenAI server."""

from __future__ import annotations

import pytest

from bench.scenarios import quality
from tests.support.scripted_llm import Reply, ScriptedLLM, words


@pytest.mark.parametrize(
    ("target", "produced", "score"),
    [
        (100, 100, 100.0),
        (100, 400, 0.0),
        (100, 250, 50.0),
        (300, 100, 0.0),
        (200, 100, 50.0),
        (10, 0, 0.0),
    ],
)
def test_score_l_is_longbench_writes_length_score(target: int, produced: int, score: float) -> None:
    assert quality.score_l(target, produced) == pytest.approx(score)


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("<summary>Bikes help.", True),
        ("Bikes help.\n</summary>", True),
        ("Document title: Bikes\nBikes help.", True),
        ("Here's a short section:\nBikes help.", True),
        ("Bikes help, and a < b.", False),
        ("Bikes help. Here is why: they are cheap.", False),
    ],
)
def test_scaffolding_measure(text: str, leak: bool) -> None:
    assert quality.has_scaffolding(text) is leak


def test_title_echo_and_sentence_end_measures() -> None:
    titles = ("Bike share", "Why now")
    assert quality.opens_with_title("Why now\nBikes help.", titles)
    assert quality.opens_with_title("[Why now]\nBikes help.", titles)
    assert quality.opens_with_title("Why now: bikes help.", titles)
    assert not quality.opens_with_title("Why now is the time for bikes.", titles)
    assert quality.ends_mid_sentence("Bikes are used all over the")
    assert not quality.ends_mid_sentence('Bikes help."\n')
    assert quality.repeated_4gram_share("a b c d a b c d") == pytest.approx(1 - 4 / 5)


async def test_one_pass_over_an_outline_with_both_variants() -> None:
    reply = words("<summary>Here is the text. Bikes help cities. Docks cost little money.")
    llm = ScriptedLLM(lambda _n, _body: Reply(tokens=reply))
    await llm.start()
    try:
        results = await quality.measure(
            llm.base_url,
            "scripted",
            only={"inc-2291-postmortem"},
            max_sections=2,
            say=lambda _m: None,
        )
    finally:
        await llm.stop()
    before, after = results["variants"]["before"], results["variants"]["after"]
    assert before["sections"] == after["sections"] == 2
    assert before["scaffolding"] == 2 and after["scaffolding"] == 0
    # The old prompt had labelled blocks; the new one is one request.
    prompts = [r.body["messages"][-1]["content"] for r in llm.requests]
    assert sum("<outline>" in p for p in prompts) == 2
    assert sum(p.startswith("Write two paragraphs in English") for p in prompts) == 2
    assert "| **all** | **after** |" in quality.render(results)
