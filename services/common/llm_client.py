"""The one way docgen makes its `openai` client, and which HTTP transport it reads through.

Every LLM call goes through `openai.AsyncOpenAI`. Under it, the default transport is httpx
(httpx → httpcore → h11 → anyio: a chunked-encoding parse, a cancel scope and several async
generators resumed per read). On the generator's per-token path that is one read per token,
and it was the largest share of the generator's CPU (docs/performance.md). The `openai`
package ships an aiohttp transport for exactly this (`openai.DefaultAioHttpClient`, the
`openai[aiohttp]` extra): aiohttp's HTTP parser and stream reader are in C. Measured on this
machine, 100 concurrent 30 tokens/s streams read through the client with our SSE line
splitter: 196–220 µs of CPU per token over httpx, 75–87 µs over aiohttp. `httpx` stays
available (`DOCGEN_LLM_HTTP=httpx`) for a server aiohttp cannot talk to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import openai

from services.common.env import env_str

LLMHttp = Literal["aiohttp", "httpx"]
CHOICES: tuple[LLMHttp, ...] = ("aiohttp", "httpx")


@dataclass(frozen=True)
class LLMHttpSettings:
    transport: LLMHttp = "aiohttp"
    """`aiohttp` or `httpx`: the HTTP transport under the `openai` client of the generator and
    the summary service (`DOCGEN_LLM_HTTP`). aiohttp costs about 2.5 times less CPU per
    streamed token; httpx is the `openai` package's default."""

    @classmethod
    def from_env(cls) -> LLMHttpSettings:
        choice = env_str("DOCGEN_LLM_HTTP", cls.transport).strip().lower()
        if choice not in CHOICES:
            raise ValueError(f"DOCGEN_LLM_HTTP must be one of {', '.join(CHOICES)}, not {choice!r}")
        return cls(transport=choice)  # type: ignore[arg-type]


def openai_client(
    *,
    base_url: str,
    api_key: str,
    timeout: float | openai.Timeout,
    max_retries: int = 0,
    transport: LLMHttp | None = None,
) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` on the configured transport (`DOCGEN_LLM_HTTP` unless given);
    `await client.close()` closes the transport too."""
    chosen = transport or LLMHttpSettings.from_env().transport
    # The package's defaults (timeouts, up to 1,000 connections, as with httpx): every live
    # section holds one stream; admission is the generator's (`DOCGEN_MAX_ACTIVE_RUNS`).
    http_client = openai.DefaultAioHttpClient(timeout=timeout) if chosen == "aiohttp" else None
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=max_retries,
        timeout=timeout,
        http_client=http_client,
    )
