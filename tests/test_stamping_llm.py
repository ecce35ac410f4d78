"""The relay benchmark's stand-in LLM (bench/stamping_llm.py), read by the real `openai` client:
it streams `max_tokens` stamped tokens, or fewer when the prompt asks for a stream's length as
the bench's outlines do; and a bench outline's target lies past its stream, so the generator's
sentence stop and whole-sentence hold never shape what the relay benchmark measures."""

from __future__ import annotations

import asyncio
import math

import openai
import pytest

from bench.stamping_llm import MODEL, StampingConfig, _HttpProtocol
from bench.wsclient import one_section_outline
from services.common.sentence_end import HOLD_FROM_SHARE
from services.generator.outline import MAX_TARGET_TOKENS
from services.generator.settings import GeneratorSettings


async def _stream(prompt: str, max_tokens: int) -> tuple[list[str], str | None]:
    loop = asyncio.get_running_loop()
    config = StampingConfig(tokens_per_s=1000.0)
    server = await loop.create_server(lambda: _HttpProtocol(config), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
    try:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            stream=True,
        )
        contents, finish = [], None
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    contents.append(choice.delta.content)
                finish = choice.finish_reason or finish
        return contents, finish
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("prompt", "expected"), [("write", 12), ("please stream 5 tokens", 5)])
async def test_it_streams_max_tokens_or_the_length_the_prompt_asks(
    prompt: str, expected: int
) -> None:
    contents, finish = await _stream(prompt, max_tokens=12)
    assert len(contents) == expected
    assert all("|" in content for content in contents)  # each token carries its send time
    assert finish == "length"


def test_a_bench_outline_keeps_its_stream_clear_of_the_sentence_stop_and_hold() -> None:
    for tokens in (1, 45, 285, 735, 3900):
        section = one_section_outline(0, tokens)["sections"][0]
        assert section["brief"] == f"stream {tokens} tokens"
        assert section["target_tokens"] <= MAX_TARGET_TOKENS  # else the run is refused
        if tokens < HOLD_FROM_SHARE * MAX_TARGET_TOKENS:
            assert math.ceil(HOLD_FROM_SHARE * section["target_tokens"]) > tokens
        # The hard cap the generator sends is no shorter than the stream.
        assert math.ceil(GeneratorSettings.section_headroom * section["target_tokens"]) >= tokens
