"""`DOCGEN_LLM_HTTP`: the transport under the `openai` client (services/common/llm_client.py).

Both transports must read the same text and fail the same way, against a real HTTP server
speaking OpenAI's streaming format."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from services.common.chat_stream import END_OF_STREAM, decode_line
from services.common.llm_client import LLMHttpSettings, openai_client
from services.common.sse_lines import body_reader, split_lines
from services.generator.section_writer import (
    LLMStreamFailed,
    LLMUnavailable,
    RetryPolicy,
    SectionWriter,
)
from tests.support.http import serve_on_free_port
from tests.support.scripted_llm import Reply, ScriptedLLM

TRANSPORTS = ("aiohttp", "httpx")


def test_default_is_aiohttp_and_httpx_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCGEN_LLM_HTTP", raising=False)
    assert LLMHttpSettings.from_env().transport == "aiohttp"
    monkeypatch.setenv("DOCGEN_LLM_HTTP", " HTTPX ")
    assert LLMHttpSettings.from_env().transport == "httpx"


def test_an_unknown_transport_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCGEN_LLM_HTTP", "curl")
    with pytest.raises(ValueError, match="DOCGEN_LLM_HTTP must be one of aiohttp, httpx"):
        LLMHttpSettings.from_env()


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    def script(_n: int, body: dict[str, object]) -> Reply:
        prompt = str(body["messages"])
        if "drop" in prompt:
            return Reply(tokens=["Half", " a", " sentence"], drop_after=2)
        if "busy" in prompt:
            return Reply(status=503)
        return Reply(tokens=["Héllo", " wörld", " — ", "日本", "."])

    server = ScriptedLLM(script)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _client(base_url: str, transport: str) -> Any:
    return openai_client(
        base_url=base_url,
        api_key="test",
        timeout=5.0,
        transport=transport,  # type: ignore[arg-type]
    )


async def _write(base_url: str, transport: str, prompt: str, deltas: list[str]) -> str:
    client = _client(base_url, transport)
    try:
        writer = SectionWriter(
            client,
            model="scripted",
            temperature=0.5,
            stall_timeout_s=2.0,
            retry=RetryPolicy(max_retries=0),
        )
        result = await writer.write(
            [{"role": "user", "content": prompt}], max_tokens=20, on_delta=deltas.append
        )
        return result.text
    finally:
        await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_both_transports_read_the_same_text(llm: ScriptedLLM, transport: str) -> None:
    deltas: list[str] = []
    text = await _write(llm.base_url, transport, "write", deltas)
    assert text == "Héllo wörld — 日本."
    assert deltas == ["Héllo", " wörld", " — ", "日本", "."]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_cut_mid_way_is_a_broken_stream_with_its_text(
    llm: ScriptedLLM, transport: str
) -> None:
    deltas: list[str] = []
    with pytest.raises(LLMStreamFailed) as caught:
        await _write(llm.base_url, transport, "drop", deltas)
    assert caught.value.partial_text == "Half a"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refusing_or_absent_server_is_unavailable(llm: ScriptedLLM, transport: str) -> None:
    with pytest.raises(LLMUnavailable, match="HTTP 503"):
        await _write(llm.base_url, transport, "busy", [])
    # Nothing listens on this port any more: connection refused.
    runner, port = await serve_on_free_port(web.Application())
    await runner.cleanup()
    with pytest.raises(LLMUnavailable, match="unreachable"):
        await _write(f"http://127.0.0.1:{port}/v1", transport, "write", [])


async def _read_mode_and_lines(base_url: str, transport: str) -> tuple[str, list[str]]:
    """How `body_reader` reads a real streaming response of the `openai` client, and what."""
    client = _client(base_url, transport)
    try:
        async with client.chat.completions.with_streaming_response.create(
            model="scripted", messages=[{"role": "user", "content": "write"}], stream=True
        ) as response:
            read, mode = body_reader(response)
            return mode, [line async for line in split_lines(read) if line]
    finally:
        await client.close()


@pytest.mark.parametrize(("transport", "mode"), [("aiohttp", "aiohttp"), ("httpx", "iter_bytes")])
async def test_the_aiohttp_transport_is_read_at_its_stream_reader(
    llm: ScriptedLLM, transport: str, mode: str
) -> None:
    # If an openai upgrade moves aiohttp's reader, this fails instead of every token quietly
    # paying for five more async generators (services/common/sse_lines.py).
    read_mode, lines = await _read_mode_and_lines(llm.base_url, transport)
    assert read_mode == mode
    assert [decode_line(line) for line in lines][-1] == END_OF_STREAM
    assert "".join(c.content for c in map(decode_line, lines) if c is not None) == (
        "Héllo wörld — 日本."
    )


async def test_a_compressed_body_is_read_through_the_client_which_decodes_it() -> None:
    body = b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
    body += b"data: [DONE]\n\n"

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(body),
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner, port = await serve_on_free_port(app)
    try:
        mode, lines = await _read_mode_and_lines(f"http://127.0.0.1:{port}/v1", "aiohttp")
    finally:
        await runner.cleanup()
    assert mode == "iter_bytes"
    assert lines == body.decode().split("\n\n")[:2]
