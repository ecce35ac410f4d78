"""docs/prompts.md shows both prompt templates verbatim: these tests keep it in step with the
code that builds them (services/generator/prompts.py, services/summary/refiner.py)."""

from __future__ import annotations

import re
from pathlib import Path

from docgen.v1 import outline_pb2

from services.generator.prompts import build_section_messages
from services.summary.refiner import build_refine_messages

DOC = Path(__file__).parent.parent / "docs" / "prompts.md"
# The doc's examples, in order: section system + user, refinement system + user.
BLOCKS = re.findall(r"```text\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.DOTALL)

GARDEN = outline_pb2.Outline(
    document_id="garden",
    title="Keeping a kitchen garden",
    sections=[
        outline_pb2.OutlineSection(
            id="soil", title="Soil first", brief="Compost and structure", target_tokens=600
        ),
        outline_pb2.OutlineSection(
            id="beds", title="Raised beds", brief="Sizes and materials", target_tokens=600
        ),
        outline_pb2.OutlineSection(id="water", title="Watering", target_tokens=400),
    ],
)


def test_the_doc_shows_four_prompt_messages() -> None:
    assert len(BLOCKS) == 4


def test_section_prompt_in_the_doc_is_what_the_generator_sends() -> None:
    summary = (
        "Soil first: Good soil is the foundation of every kitchen garden. Compost feeds the "
        "worms that keep it open."
    )
    system, user = build_section_messages(GARDEN, 1, summary)
    assert [system["content"], user["content"]] == BLOCKS[0:2]


def test_refinement_prompt_in_the_doc_is_what_the_summary_service_sends() -> None:
    summary = (
        "Soil first: Good soil is the foundation of every kitchen garden.\n"
        "Raised beds: Raised beds warm up early in spring and drain well."
    )
    system, user = build_refine_messages(GARDEN.title, summary, 250)
    assert [system["content"], user["content"]] == BLOCKS[2:4]
