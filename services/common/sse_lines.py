"""The lines of a streaming HTTP response body, split from its raw bytes.

`httpx`'s `aiter_lines()` stacks a text decoder, a line decoder and two re-chunkers, each an
async generator resumed per read, on top of the raw body; on the generator's per-token path
(one read per token at 30 tokens/s) those layers were a measurable share of its CPU
(docs/performance.md). The body of an SSE stream is UTF-8 text in lines, so splitting the raw
bytes and decoding each whole line (a multi-byte character never straddles a newline) gives
the same lines for less.

`body_reader` goes one step further for the `openai` client's aiohttp transport (the default,
services/common/llm_client.py): under `response.iter_bytes()` lie five more async generators
(openai's, httpx's decoded and raw byte streams, its timing wrapper, the transport's adapter)
around aiohttp's `StreamReader`; at 100 streams they were ~12 % of the generator's busy samples.
It reads the `StreamReader` itself when the body is not content-encoded, and falls back to
`iter_bytes()` for any other transport or encoding (`tests/test_sse_lines.py` checks which one a
real aiohttp response gets, so an `openai` upgrade that moves the reader cannot silently make
every read slow again)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Read = Callable[[], Awaitable[bytes]]
"""The next bytes of a body; `b""` once it has ended."""


def body_reader(response: Any) -> tuple[Read, str]:
    """How to read the raw body of an `openai` streaming response (`with_streaming_response`),
    and which way it is read: `"aiohttp"` (its `StreamReader` directly) or `"iter_bytes"`."""
    http_response = response.http_response
    # httpx's BoundAsyncStream around openai's AiohttpResponseStream around aiohttp's response.
    transport_stream = getattr(getattr(http_response, "stream", None), "_stream", None)
    aiohttp_response = getattr(transport_stream, "_aiohttp_response", None)
    content = getattr(aiohttp_response, "content", None)
    encoding = http_response.headers.get("content-encoding", "identity").strip().lower()
    if content is not None and hasattr(content, "readany") and encoding in ("", "identity"):
        return content.readany, "aiohttp"
    chunks = response.iter_bytes().__aiter__()

    async def read() -> bytes:
        async for chunk in chunks:
            if chunk:
                return bytes(chunk)
        return b""

    return read, "iter_bytes"


async def split_lines(read: Read) -> AsyncIterator[str]:
    """Each line of the body `read` returns (without its `\\n` or `\\r\\n`), as text; a last
    line without a newline is given too. Invalid UTF-8 becomes U+FFFD, as `httpx`'s text
    decoder makes it."""
    pending = b""
    while chunk := await read():
        if b"\n" not in chunk:
            pending += chunk
            continue
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line.removesuffix(b"\r").decode(errors="replace")
    if pending:
        yield pending.removesuffix(b"\r").decode(errors="replace")
