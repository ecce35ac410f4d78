"""`DOCGEN_LLM_EXTRA_BODY`: server-specific parameters merged into every LLM request."""

from __future__ import annotations

import openai
import pytest

from services.common.env import ConfigError
from services.generator.section_writer import SectionWriter
from services.generator.settings import BUNDLED_LLM_EXTRA_BODY, GeneratorSettings
from tests.support.scripted_llm import Reply, ScriptedLLM


def test_unset_adds_nothing_for_another_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCGEN_LLM_EXTRA_BODY", raising=False)
    monkeypatch.setenv("DOCGEN_LLM_BASE_URL", "https://llm.example/v1")
    assert GeneratorSettings.from_env().llm_extra_body is None


def test_unset_bans_the_bundled_models_end_tokens_at_its_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCGEN_LLM_EXTRA_BODY", raising=False)
    monkeypatch.delenv("DOCGEN_LLM_BASE_URL", raising=False)
    assert GeneratorSettings.from_env().llm_extra_body == BUNDLED_LLM_EXTRA_BODY
    # The ids are SmolLM2's end-of-text and chat-turn tokens.
    assert set(BUNDLED_LLM_EXTRA_BODY["logit_bias"]) == {"0", "1", "2"}
    monkeypatch.setenv("DOCGEN_LLM_EXTRA_BODY", "{}")  # and it can be turned off
    assert GeneratorSettings.from_env().llm_extra_body == {}


def test_a_json_object_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCGEN_LLM_EXTRA_BODY", '{"logit_bias": {"2": -100}, "top_k": 20}')
    assert GeneratorSettings.from_env().llm_extra_body == {"logit_bias": {"2": -100}, "top_k": 20}


@pytest.mark.parametrize(
    ("raw", "problem"), [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")]
)
def test_anything_else_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, problem: str
) -> None:
    monkeypatch.setenv("DOCGEN_LLM_EXTRA_BODY", raw)
    with pytest.raises(ConfigError, match=f"DOCGEN_LLM_EXTRA_BODY.*{problem}"):
        GeneratorSettings.from_env()


async def test_the_writer_merges_it_into_the_request_body() -> None:
    llm = ScriptedLLM(lambda _n, _body: Reply(tokens=["a", "b"]))
    await llm.start()
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="test", max_retries=0)
    try:
        writer = SectionWriter(
            client,
            model="scripted",
            temperature=0.5,
            stall_timeout_s=2.0,
            extra_body={"logit_bias": {"2": -100}},
        )
        result = await writer.write(
            [{"role": "user", "content": "hi"}], max_tokens=7, on_delta=lambda _delta: None
        )
    finally:
        await client.close()
        await llm.stop()
    assert result.text == "ab"
    body = llm.requests[0].body
    assert body["logit_bias"] == {"2": -100}
    # The writer's own parameters are still there beside it.
    assert (body["max_tokens"], body["stream"], body["model"]) == (7, True, "scripted")
