"""One line of an OpenAI chat-completions stream, read as raw SSE through the `openai`
client (`with_streaming_response`): decoding it ourselves costs about a seventh of the
client's typed stream parser per token (DESIGN.md)."""

from __future__ import annotations

import json
from typing import NamedTuple

import aiohttp
import openai
import orjson

try:  # the transport under the openai client: httpx2 in openai >= 3, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

# What reading a stream through the openai client can raise besides our own errors: the
# client's, the transport's (mid-stream; the aiohttp transport maps most of its errors to
# httpx's, not all), the socket's, and malformed JSON.
STREAM_ERRORS: tuple[type[Exception], ...] = (
    openai.APIError,
    _http.HTTPError,
    aiohttp.ClientError,
    OSError,
    json.JSONDecodeError,
)


class ChatStreamError(Exception):
    """The server reported an error inside an already-started stream, or the stream ended
    in a way that leaves its text in doubt."""


# Finish reasons a section passes on to clients as they are; any other one the server
# reports (`tool_calls`, a vendor's own) still means the model finished: `stop`.
SECTION_FINISH_REASONS = frozenset({"stop", "length", "content_filter"})


class ChatChunk(NamedTuple):
    """One decoded chunk (a named tuple: built once per token, it costs a quarter of a frozen
    dataclass)."""

    content: str = ""
    """Text to append ("" when the chunk carries none)."""
    finish_reason: str | None = None
    completion_tokens: int | None = None
    """Usage, when the server reports it (`stream_options.include_usage`)."""
    done: bool = False
    """`data: [DONE]`: the stream is over."""


END_OF_STREAM = ChatChunk(done=True)


def decode_line(line: str) -> ChatChunk | None:
    """The chunk of one SSE line; None for lines that carry none (comments, event names,
    blank separators). Raises `ChatStreamError`, or `ValueError` for malformed JSON."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return END_OF_STREAM
    try:
        # orjson: a quarter of json's time on a typical chunk, paid once per token.
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        chunk = json.loads(data)  # what orjson refuses but json reads (a lone surrogate escape)
    if chunk.get("error"):
        raise ChatStreamError(f"the LLM reported an error mid-stream: {chunk['error']}")
    usage = chunk.get("usage")
    completion_tokens = usage.get("completion_tokens") if usage else None
    content = ""
    finish_reason = None
    for choice in chunk.get("choices") or ():
        content += (choice.get("delta") or {}).get("content") or ""
        finish_reason = choice.get("finish_reason") or finish_reason
    return ChatChunk(
        content,
        finish_reason,
        int(completion_tokens) if completion_tokens is not None else None,
    )


def final_finish_reason(finish_reason: str | None, *, done: bool) -> str:
    """How a stream that ended cleanly ended, for a client: `stop`, `length` or
    `content_filter`. A stream that ended with neither `[DONE]` nor a finish reason was cut
    short (a proxy or server closed it politely mid-answer): its text may stop anywhere, so
    it raises `ChatStreamError` rather than pass for a finished `stop`."""
    if finish_reason is None:
        if not done:
            raise ChatStreamError("the LLM stream ended without a finish reason and without [DONE]")
        return "stop"
    return finish_reason if finish_reason in SECTION_FINISH_REASONS else "stop"
