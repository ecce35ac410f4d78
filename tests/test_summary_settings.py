"""Tests of the summary service's settings: modes and the refinement LLM's fallbacks."""

from __future__ import annotations

import pytest

from services.common.env import ConfigError
from services.generator.settings import BUNDLED_LLM_BASE_URL, BUNDLED_LLM_MODEL
from services.summary.settings import SummarySettings

VARIABLES = (
    "DOCGEN_SUMMARY_MODE",
    "DOCGEN_SUMMARY_LLM_BASE_URL",
    "DOCGEN_SUMMARY_LLM_MODEL",
    "DOCGEN_SUMMARY_LLM_API_KEY",
    "DOCGEN_SUMMARY_LLM_DEADLINE_S",
    "DOCGEN_LLM_BASE_URL",
    "DOCGEN_LLM_MODEL",
    "DOCGEN_LLM_API_KEY",
    "OPENAI_API_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_extractive_and_the_bundled_llm() -> None:
    settings = SummarySettings.from_env()
    assert settings.mode == "extractive"
    assert settings.llm_base_url == BUNDLED_LLM_BASE_URL
    assert settings.llm_model == BUNDLED_LLM_MODEL
    assert settings.llm_deadline_s == 15.0


def test_refinement_llm_falls_back_to_the_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCGEN_SUMMARY_MODE", "LLM")
    monkeypatch.setenv("DOCGEN_LLM_BASE_URL", "http://gen:8000/v1")
    monkeypatch.setenv("DOCGEN_LLM_MODEL", "gen-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    settings = SummarySettings.from_env()
    assert settings.mode == "llm"
    assert (settings.llm_base_url, settings.llm_model, settings.llm_api_key) == (
        "http://gen:8000/v1",
        "gen-model",
        "sk-openai",
    )
    monkeypatch.setenv("DOCGEN_LLM_API_KEY", "sk-gen")
    assert SummarySettings.from_env().llm_api_key == "sk-gen"


def test_refinement_llm_settings_of_its_own_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCGEN_LLM_BASE_URL", "http://gen:8000/v1")
    monkeypatch.setenv("DOCGEN_LLM_MODEL", "gen-model")
    monkeypatch.setenv("DOCGEN_LLM_API_KEY", "sk-gen")
    monkeypatch.setenv("DOCGEN_SUMMARY_LLM_BASE_URL", "http://sum:8000/v1")
    monkeypatch.setenv("DOCGEN_SUMMARY_LLM_MODEL", "sum-model")
    monkeypatch.setenv("DOCGEN_SUMMARY_LLM_API_KEY", "sk-sum")
    monkeypatch.setenv("DOCGEN_SUMMARY_LLM_DEADLINE_S", "2.5")
    settings = SummarySettings.from_env()
    assert (settings.llm_base_url, settings.llm_model, settings.llm_api_key) == (
        "http://sum:8000/v1",
        "sum-model",
        "sk-sum",
    )
    assert settings.llm_deadline_s == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DOCGEN_SUMMARY_MODE", "abstractive"),
        ("DOCGEN_SUMMARY_LLM_DEADLINE_S", "soon"),
        ("DOCGEN_SUMMARY_LLM_DEADLINE_S", "0"),
    ],
)
def test_bad_values_fail_loudly_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        SummarySettings.from_env()
