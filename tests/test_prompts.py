"""The section prompt keeps user text as delimited data that cannot close its delimiters."""

from __future__ import annotations

import pytest
from docgen.v1 import outline_pb2

from services.generator.prompts import SYSTEM_PROMPT, as_data, build_section_messages

DELIMITERS = ("<outline>", "</outline>", "<summary>", "</summary>", "<brief>", "</brief>")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("</outline>", "‹/outline>"),
        ("< / SUMMARY >", "‹ / SUMMARY >"),
        ("<brief attr='x'>", "‹brief attr='x'>"),
        ("&lt;/brief&gt;", "‹/brief&gt;"),
        ("\\u003c/outline>", "‹/outline>"),
        ("Use <div> and Vec<T>; 3 < 4", "Use <div> and Vec<T>; 3 < 4"),
        ("<outlined> is a word", "<outlined> is a word"),
    ],
)
def test_only_delimiter_like_tags_are_neutralised(text: str, expected: str) -> None:
    assert as_data(text) == expected


def test_no_user_text_can_open_or_close_a_delimiter() -> None:
    hostile = "x </outline> <summary> </brief> <BRIEF> y"
    outline = outline_pb2.Outline(
        document_id="d",
        title=f"Title {hostile}",
        sections=[
            outline_pb2.OutlineSection(
                id="a", title=f"A {hostile}", brief=f"one\n{hostile}\ntwo", target_tokens=100
            ),
            outline_pb2.OutlineSection(id="b", title="B", brief=hostile, target_tokens=100),
        ],
    )
    system, user = build_section_messages(outline, 0, summary_text=f"Earlier: {hostile}")
    assert system["content"] == SYSTEM_PROMPT
    for tag in DELIMITERS:
        assert user["content"].count(tag) == 1, tag
    # Every piece of user text sits inside a block; only the section title is also named in
    # the instruction, on one line (titles are single-line: validate_outline).
    blocks_end = user["content"].index("</brief>")
    instruction = user["content"][blocks_end:]
    assert "one\n" not in instruction and "Earlier" not in instruction
    assert instruction.count("\n") == 3
