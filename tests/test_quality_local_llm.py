"""The real bundled model (SmolLM2-135M on llama.cpp) writes a 3-section run through the real
edge, generator and summary: no scaffolding in any section, every section ends with sentence
punctuation, and no summary quotes markup."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bench.scenarios.quality import ends_mid_sentence, has_scaffolding, opens_with_title
from services.common.defaults import BUNDLED_LLM_MODEL
from services.generator.settings import BUNDLED_LLM_EXTRA_BODY
from services.local_llm import LocalLLMSettings, server_command
from tests.support.processes import free_port, spawn, stop_process
from tests.support.scripted_llm import ScriptedLLM
from tests.support.stack import sections_text, start_stack
from tests.test_stack import LOCAL_LLM_TEST_THREADS, require_local_llm

OUTLINE = {
    "document_id": "garden",
    "title": "Keeping a Kitchen Garden",
    "sections": [
        {
            "id": "soil",
            "title": "Soil first",
            "brief": "Compost, structure, and why worms matter.",
            "target_tokens": 80,
        },
        {
            "id": "beds",
            "title": "Raised beds",
            "brief": "Sizes, materials, and how deep the soil must be.",
            "target_tokens": 80,
        },
        {
            "id": "water",
            "title": "Watering",
            "brief": "Morning or evening, how much, and drip lines.",
            "target_tokens": 80,
        },
    ],
}


async def wait_for_models(base_url: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 180
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.returncode is None, "the llama.cpp server exited"
            try:
                async with session.get(f"{base_url}/models") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError("the llama.cpp server did not answer within 180 s")


@pytest.mark.local_llm
@pytest.mark.timeout(900)
async def test_a_run_on_the_bundled_model_has_no_scaffolding_and_ends_every_sentence() -> None:
    require_local_llm()
    settings = LocalLLMSettings(port=free_port(), n_threads=LOCAL_LLM_TEST_THREADS)
    llama = await spawn(
        *server_command(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_models(settings.base_url, llama)
        stack = await start_stack(
            ScriptedLLM(),  # not asked: the generator goes to the bundled model
            generator={
                "llm_base_url": settings.base_url,
                "llm_model": BUNDLED_LLM_MODEL,
                # What `make run` sends the bundled model (its default address gets it).
                "llm_extra_body": BUNDLED_LLM_EXTRA_BODY,
                "llm_stall_timeout_s": 60.0,
                "llm_request_timeout_s": 120.0,
            },
        )
        try:
            client = await stack.connect()
            await client.send({"type": "generate", "outline": OUTLINE, "request_id": "q1"})
            frames = await client.run_to_end(timeout=600)
        finally:
            await stack.close()
    finally:
        await stop_process(llama)

    assert frames[-1]["status"] == "completed", frames[-1]
    assert frames[0]["language"] == "en"
    texts = sections_text(frames)
    for section in OUTLINE["sections"]:
        text = texts[section["id"]]
        assert text.strip(), section["id"]
        assert not has_scaffolding(text), (section["id"], text)
        assert not ends_mid_sentence(text), (section["id"], text)
        assert not opens_with_title(text, (OUTLINE["title"], section["title"])), text
    for update in (f for f in frames if f["type"] == "summary_update"):
        assert not has_scaffolding(update["summary"]), update["summary"]
