"""The gRPC door validates outlines exactly as the WebSocket door does: every constraint of the
outline in `schemas/client/generate.json` is enforced by `validate_outline` too, at the same
limit (gRPC callers never pass the edge's schema check)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.edge.frames import outline_from_frame
from services.edge.schemas import FrameValidator
from services.generator.errors import InvalidOutline
from services.generator.outline import OUTLINE_SCHEMA, validate_outline

CONSTRAINTS = ("minLength", "maxLength", "minItems", "maxItems", "pattern", "minimum", "maximum")


def base() -> dict[str, Any]:
    return {
        "document_id": "doc",
        "title": "A document",
        "sections": [{"id": "intro", "title": "Intro", "brief": "Say hello.", "target_tokens": 50}],
    }


def section(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(outline: dict[str, Any]) -> None:
        outline["sections"][0].update(fields)

    return mutate


def top(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda outline: outline.update(fields)


def many_sections(count: int) -> Callable[[dict[str, Any]], None]:
    def mutate(outline: dict[str, Any]) -> None:
        outline["sections"] = [
            {"id": f"s{i}", "title": "T", "target_tokens": 1} for i in range(count)
        ]

    return mutate


# (the schema constraint it breaks, as "<path>:<keyword>", and how)
BREAKS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("document_id:minLength", top(document_id="")),
    ("document_id:maxLength", top(document_id="d" * 129)),
    ("title:minLength", top(title="")),
    ("title:maxLength", top(title="t" * 301)),
    ("sections:minItems", top(sections=[])),
    ("sections:maxItems", many_sections(65)),
    ("sections.id:pattern", section(id="two words")),
    ("sections.id:pattern", section(id="i" * 65)),
    ("sections.id:pattern", section(id="intro\n")),  # ECMA `$` is the very end
    ("sections.title:minLength", section(title="")),
    ("sections.title:maxLength", section(title="t" * 301)),
    ("sections.brief:maxLength", section(brief="b" * 4001)),
    ("sections.target_tokens:minimum", section(target_tokens=0)),
    ("sections.target_tokens:maximum", section(target_tokens=4097)),
]
if "language" in OUTLINE_SCHEMA["properties"]:
    BREAKS += [
        ("language:pattern", top(language="not a tag")),
        ("language:maxLength", top(language="en-" + "a" * 40)),
    ]

# At each limit, on the accepted side.
LIMITS: list[Callable[[dict[str, Any]], None]] = [
    top(document_id="d" * 128),
    top(title="t" * 300),
    many_sections(64),
    section(id="i" * 64),
    section(id="A-z_0.9:x"),
    section(title="t" * 300, brief="b" * 4000),
    section(target_tokens=1),
    section(target_tokens=4096),
]


def constraints(schema: dict[str, Any], path: str = "") -> Iterator[str]:
    for keyword in CONSTRAINTS:
        if keyword in schema:
            yield f"{path}:{keyword}"
    for name, child in schema.get("properties", {}).items():
        yield from constraints(child, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from constraints(schema["items"], path)


def ws_accepts(outline: dict[str, Any]) -> bool:
    return FrameValidator().validate_client({"type": "generate", "outline": outline}) is None


def grpc_accepts(outline: dict[str, Any]) -> bool:
    try:
        validate_outline(outline_from_frame(outline))
    except InvalidOutline:
        return False
    return True


def test_every_outline_constraint_of_the_schema_has_a_case_here() -> None:
    assert set(constraints(OUTLINE_SCHEMA)) <= {broken for broken, _ in BREAKS}


@pytest.mark.parametrize(("broken", "mutate"), BREAKS, ids=[b for b, _ in BREAKS])
def test_what_the_schema_refuses_the_generator_refuses(
    broken: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    outline = copy.deepcopy(base())
    mutate(outline)
    assert not ws_accepts(outline)
    assert not grpc_accepts(outline)


@pytest.mark.parametrize("mutate", LIMITS)
def test_both_doors_accept_the_limits(mutate: Callable[[dict[str, Any]], None]) -> None:
    outline = copy.deepcopy(base())
    mutate(outline)
    assert ws_accepts(outline)
    assert grpc_accepts(outline)
