"""`split_lines`: the lines of a raw body however its bytes are cut into reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from services.common.sse_lines import split_lines


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    positions = sorted({c for c in cuts if 0 < c < len(data)})
    start = 0
    for position in [*positions, len(data)]:
        yield data[start:position]
        start = position


async def _lines(data: bytes, cuts: list[int]) -> list[str]:
    chunks = _chunks(data, cuts)

    async def read() -> bytes:
        async for chunk in chunks:
            if chunk:
                return chunk
        return b""

    return [line async for line in split_lines(read)]


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(lines=st.lists(TEXT.filter(lambda t: "\n" not in t and "\r" not in t), max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
       crlf=st.booleans())  # fmt: skip
async def test_same_lines_as_str_splitlines_whatever_the_cuts(
    lines: list[str], cuts: list[int], crlf: bool
) -> None:
    ending = "\r\n" if crlf else "\n"
    body = "".join(line + ending for line in lines).encode()
    assert await _lines(body, cuts) == lines


async def test_sse_events_and_a_last_line_without_newline() -> None:
    body = b'data: {"a":"caf\xc3\xa9"}\n\ndata: [DONE]'
    # The two bytes of the accented letter in different reads.
    assert await _lines(body, [13, 14, 20]) == ['data: {"a":"café"}', "", "data: [DONE]"]


async def test_invalid_utf8_becomes_the_replacement_character_as_in_httpx() -> None:
    assert await _lines(b"data: \xff\n", []) == ["data: \ufffd"]
