"""The document's language: a BCP 47 tag normalised, or detected from the outline's text, and
named in that language for the prompt."""

from __future__ import annotations

import pytest

from services.common import language


@pytest.mark.parametrize(
    ("tag", "normal"),
    [("es", "es"), ("PT-br", "pt-BR"), (" en ", "en"), ("zh-hant-TW", "zh-Hant-TW")],
)
def test_tags_are_normalised(tag: str, normal: str) -> None:
    assert language.normalize_tag(tag) == normal


@pytest.mark.parametrize("tag", ["", "e", "english please", "es_ES", "x" * 40, "es-"])
def test_non_tags_are_refused(tag: str) -> None:
    with pytest.raises(language.InvalidLanguage):
        language.normalize_tag(tag)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (
            [
                "Guía de bicicletas compartidas",
                "Resumen ejecutivo",
                "Costes y financiación",
                "Qué cuesta cada estación y quién lo paga",
            ],
            "es",
        ),
        (["Sourdough for beginners", "Making and keeping a starter", "Common mistakes"], "en"),
        (["Pão de fermentação natural", "Como manter o fermento"], "pt"),
    ],
)
def test_an_outline_language_is_detected(texts: list[str], expected: str) -> None:
    assert language.detect(texts).language == expected


def test_no_text_means_the_default() -> None:
    assert language.detect(["", "  ", "42"]).language == language.DEFAULT_LANGUAGE


@pytest.mark.parametrize(
    ("tag", "name", "rules"),
    [
        ("es-MX", "español", "es"),
        ("en", "English", "en"),
        ("pt-BR", "português", "pt"),
        ("sw", "sw", "sw"),
    ],
)
def test_names_and_sentence_rules(tag: str, name: str, rules: str) -> None:
    assert language.prompt_name(tag) == name
    assert language.sentence_rules(tag) == rules


def test_a_guess_on_a_few_words_falls_back_to_the_default() -> None:
    # py3langid says French at ~0.36 for these; a guess is worse than the default.
    assert language.detect(["Matrix", "Section 0", "b"]).language == language.DEFAULT_LANGUAGE
