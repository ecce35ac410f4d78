"""The lines of a streaming HTTP response body, split from its raw bytes.

`httpx`'s `aiter_lines()` stacks a text decoder, a line decoder and two re-chunkers, each an
async generator resumed per read, on top of the raw body; on the generator's per-token path
(one read per token at 30 tokens/s) those layers were a measurable share of its CPU
(docs/performance.md). The body of an SSE stream is UTF-8 text in lines, so splitting the raw
bytes and decoding each whole line (a multi-byte character never straddles a newline) gives
the same lines for less."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Each line of the bytes in `chunks` (without its `\\n` or `\\r\\n`), as text; a last
    line without a newline is given too. Invalid UTF-8 becomes U+FFFD, as `httpx`'s text
    decoder makes it."""
    pending = b""
    async for chunk in chunks:
        if b"\n" not in chunk:
            pending += chunk
            continue
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line.removesuffix(b"\r").decode(errors="replace")
    if pending:
        yield pending.removesuffix(b"\r").decode(errors="replace")
