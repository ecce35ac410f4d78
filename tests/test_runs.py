"""What the generator accepts as an outline (also from gRPC callers, who skip the edge's JSON
Schema), and run ids that cannot be guessed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from docgen.v1 import outline_pb2

from services.generator.errors import InvalidOutline
from services.generator.outline import MAX_SECTIONS, validate_outline
from services.generator.runs.registry import RunRegistry
from services.generator.settings import GeneratorSettings


def outline(sections: int = 2, **fields: Any) -> outline_pb2.Outline:
    section = {"title": "Section", "brief": "What it says", "target_tokens": 100}
    section.update({k: v for k, v in fields.items() if k in ("brief", "target_tokens")})
    if "section_title" in fields:
        section["title"] = fields["section_title"]
    return outline_pb2.Outline(
        document_id=fields.get("document_id", "doc"),
        title=fields.get("title", "A document"),
        sections=[outline_pb2.OutlineSection(id=f"s{i}", **section) for i in range(sections)],
    )


def test_a_normal_outline_passes() -> None:
    validate_outline(outline(brief="Two lines:\n\tindented and\nplain."))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"brief": "nul \x00 byte"}, "sections[0].brief contains the control character U+0000"),
        ({"brief": "escape \x1b[2J"}, "U+001B"),
        ({"brief": "delete \x7f"}, "U+007F"),
        ({"brief": "c1 \x9b"}, "U+009B"),
        ({"brief": "carriage\r\nreturn"}, "U+000D"),
        ({"title": "Two\nlines"}, "title contains the control character U+000A"),
        ({"section_title": "Tab\there"}, "sections[0].title contains the control character U+0009"),
        ({"document_id": "doc\x00"}, "document_id contains"),
        ({"title": "t" * 301}, "title is longer than 300 characters"),
        ({"brief": "b" * 4001}, "brief is longer than 4000 characters"),
        ({"target_tokens": 4097}, "target_tokens must be 1..4096"),
    ],
)
def test_bad_text_is_an_invalid_outline(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidOutline, match=re.escape(problem)):
        validate_outline(outline(**fields))


def test_the_sections_target_tokens_have_a_total_cap() -> None:
    validate_outline(outline(8, target_tokens=4096))  # 32 768: exactly the default cap
    with pytest.raises(InvalidOutline, match="add up to 32769, more than 32768"):
        validate_outline(outline(9, target_tokens=3641))
    with pytest.raises(InvalidOutline, match="more than 1000"):
        validate_outline(outline(2, target_tokens=600), max_total_tokens=1000)


def test_too_many_sections_is_one_short_problem() -> None:
    with pytest.raises(InvalidOutline) as refused:
        validate_outline(outline(10_000, brief="\x00"))
    assert str(refused.value) == f"sections has 10000 entries, more than {MAX_SECTIONS}"


def test_run_ids_carry_128_random_bits() -> None:
    registry = RunRegistry(writer=None, summaries=None, settings=GeneratorSettings())  # type: ignore[arg-type]
    ids = {registry._new_run_id() for _ in range(1000)}
    assert len(ids) == 1000
    for run_id in ids:
        assert re.fullmatch(r"run_[A-Za-z0-9_-]{22}", run_id)  # token_urlsafe(16): 16 bytes
