"""`decode_line`: one SSE line of an OpenAI chat-completions stream."""

from __future__ import annotations

import json

import pytest

from services.common.chat_stream import END_OF_STREAM, ChatStreamError, decode_line


def _line(chunk: object) -> str:
    return "data: " + json.dumps(chunk)


def test_content_finish_reason_and_usage() -> None:
    chunk = decode_line(
        _line({"choices": [{"delta": {"content": "Olá"}, "finish_reason": "length"}]})
    )
    assert chunk is not None
    assert (chunk.content, chunk.finish_reason) == ("Olá", "length")
    usage = decode_line(_line({"choices": [], "usage": {"completion_tokens": 7}}))
    assert usage is not None and usage.completion_tokens == 7 and usage.content == ""


def test_done_comments_and_blank_lines() -> None:
    assert decode_line("data: [DONE]") is END_OF_STREAM
    assert decode_line(": keep-alive") is None
    assert decode_line("") is None


def test_an_error_inside_the_stream_is_reported() -> None:
    with pytest.raises(ChatStreamError, match="mid-stream"):
        decode_line(_line({"error": {"message": "overloaded"}}))


def test_malformed_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_line('data: {"choices": [')


def test_what_orjson_refuses_but_json_reads_still_decodes() -> None:
    # A lone surrogate escape: orjson rejects it, the standard library reads it.
    chunk = decode_line('data: {"choices": [{"delta": {"content": "\\ud83dx"}}]}')
    assert chunk is not None and chunk.content == "\ud83dx"
