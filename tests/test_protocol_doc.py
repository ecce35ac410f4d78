"""docs/protocol.md cannot rot: its transcripts equal those of a fresh real run, and it names
every frame type, field, error code, close code and handshake answer the code has."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.edge.session import CloseCode
from tests.support import transcript

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
EDGE = ROOT / "services" / "edge"
REGENERATE = "regenerate with: .venv/bin/python scripts/protocol_transcript.py"


@pytest.fixture(scope="module")
def doc() -> str:
    return transcript.DOC.read_text(encoding="utf-8")


def schema(rel: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / rel).read_text(encoding="utf-8"))
    return loaded


def in_code_span(doc: str, word: str) -> bool:
    """`word` appears inside some `...` span of the doc (as a whole word)."""
    return re.search(r"`[^`\n]*(?<![\w])" + re.escape(word) + r"(?![\w])[^`\n]*`", doc) is not None


def property_names(node: Any) -> Iterator[str]:
    """Every property name declared anywhere in a schema (examples are skipped)."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            yield from properties
        for key, child in node.items():
            if key != "examples":
                yield from property_names(child)
    elif isinstance(node, list):
        for child in node:
            yield from property_names(child)


async def test_transcripts_equal_a_fresh_run(doc: str) -> None:
    fresh = await transcript.produce()
    in_doc = transcript.read_blocks(doc)
    assert sorted(in_doc) == sorted(transcript.NAMES), f"transcript markers missing; {REGENERATE}"
    for name in transcript.NAMES:
        assert in_doc[name] == fresh[name], f"the {name!r} transcript is out of date; {REGENERATE}"


def test_every_frame_type_is_documented(doc: str) -> None:
    types = [
        *schema("client-frame.json")["properties"]["type"]["enum"],
        *schema("server-frame.json")["properties"]["type"]["enum"],
    ]
    assert len(types) == 12
    for frame_type in types:
        assert f"### `{frame_type}`" in doc or f"`{frame_type}` as a run event" in doc, frame_type


def test_every_error_code_is_in_the_error_table(doc: str) -> None:
    definitions = schema("server/error.json")["definitions"]
    codes = {
        *definitions["run_error"]["properties"]["code"]["enum"],
        *definitions["frame_error"]["properties"]["code"]["enum"],
    }
    for code in codes:
        assert f"| `{code}` |" in doc, f"error code {code} is missing from the error-code tables"


def test_every_error_code_the_code_sends_is_in_the_schema() -> None:
    """Codes written literally in services/ (`code="..."`, `error_frame("...")`,
    `ProtocolError("...")`, `code = "..."`) are all in schemas/server/error.json."""
    definitions = schema("server/error.json")["definitions"]
    known = {
        *definitions["run_error"]["properties"]["code"]["enum"],
        *definitions["frame_error"]["properties"]["code"]["enum"],
    }
    patterns = [
        r'code="(\w+)"',
        r'error_frame\(\s*"(\w+)"',
        r'ProtocolError\(\s*"(\w+)"',
        r'^\s+code = "(\w+)"',
        r'_append_error\(\s*"(\w+)"',
    ]
    sent: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            sent.update(re.findall(pattern, text, re.MULTILINE))
    sent.discard("llm_error")  # the base class's code; only its subclasses are raised
    assert sent, "no error codes found: the patterns no longer match the code"
    assert sent <= known, f"codes sent but not in the schema: {sorted(sent - known)}"


def test_every_schema_field_is_documented(doc: str) -> None:
    missing = sorted(
        {
            name
            for path in SCHEMAS.rglob("*.json")
            for name in property_names(json.loads(path.read_text(encoding="utf-8")))
            if not in_code_span(doc, name)
        }
    )
    assert not missing, f"schema fields not mentioned in docs/protocol.md: {missing}"


def test_every_close_code_is_in_the_close_code_table(doc: str) -> None:
    codes = [v for k, v in vars(CloseCode).items() if k.isupper() and isinstance(v, int)]
    assert codes
    for code in [*codes, 1009, 1007]:
        assert f"| **{code}** |" in doc, f"close code {code} is missing from the close-code table"


def test_every_handshake_rejection_is_documented(doc: str) -> None:
    """Every (HTTP status, code) the edge answers a handshake with is in a table of the doc."""
    answers: set[tuple[str, str]] = set()
    for path in EDGE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        answers.update(re.findall(r'(?:json_error|AuthError)\(\s*(\d{3}),\s*"(\w+)"', text))
    assert ("401", "missing_token") in answers and ("503", "shutting_down") in answers
    undocumented = sorted(
        f"{status} {code}"
        for status, code in answers
        if not re.search(rf"\|\s*{status}\s*\|\s*`{code}`\s*\|", doc)
    )
    assert not undocumented, f"handshake answers missing from docs/protocol.md: {undocumented}"


@pytest.mark.parametrize("name", ["protocol.md", "grpc.md"])
def test_every_variable_the_docs_name_exists(name: str) -> None:
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "services").rglob("*.py"))
    named = set(re.findall(r"DOCGEN_[A-Z0-9_]+", text))
    assert named
    unknown = sorted(v for v in named if v not in code)
    assert not unknown, f"docs/{name} names variables no code reads: {unknown}"
