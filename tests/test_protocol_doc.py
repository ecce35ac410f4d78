"""docs/protocol.md cannot rot: its transcripts equal those of a fresh real run, and it names
every frame type, field, error code, close code and handshake answer the code has."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.edge.frames import REFUSAL_CLOSE_CODES
from services.edge.session import CloseCode
from tests.support import transcript

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
EDGE = ROOT / "services" / "edge"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
REGENERATE = "regenerate with: .venv/bin/python scripts/protocol_transcript.py"
# Close codes the edge does not choose but clients see: aiohttp's own (1000 answering the
# client's close, 1002 protocol error, 1007 bad UTF-8, 1009 too big) and 1006 (no close
# frame: a dropped connection).
LIBRARY_CLOSE_CODES = {1000, 1002, 1006, 1007, 1009}


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
    assert len(types) == 16
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


def close_codes() -> set[int]:
    """Every close code a client can see: the session's, the handshake refusals', and the
    WebSocket library's."""
    codes = {v for k, v in vars(CloseCode).items() if k.isupper() and isinstance(v, int)}
    assert codes
    return codes | set(REFUSAL_CLOSE_CODES.values()) | LIBRARY_CLOSE_CODES


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return loaded


def test_every_close_code_is_in_the_close_code_table(doc: str) -> None:
    for code in sorted(close_codes()):
        assert f"| **{code}** |" in doc, f"close code {code} is missing from the close-code table"


def test_every_close_code_is_in_asyncapi(asyncapi: dict[str, Any]) -> None:
    description = asyncapi["channels"]["sections"]["description"]
    for code in sorted(close_codes()):
        assert f"| {code} |" in description, f"close code {code} is missing from asyncapi.yaml"


def test_every_refusal_close_names_its_code_in_both_documents(
    doc: str, asyncapi: dict[str, Any]
) -> None:
    description = asyncapi["channels"]["sections"]["description"]
    for code, close in REFUSAL_CLOSE_CODES.items():
        assert re.search(rf"\|\s*{close}\s*\|\s*`{code}`\s*\|", doc), (code, close)
        assert re.search(rf"\|\s*{close}\s*\|[^|\n]*`{code}`", description), (code, close)
        assert (4500 <= close <= 4999) != (code in ("too_many_connections", "auth_unavailable"))


def test_every_error_code_is_in_asyncapi(asyncapi: dict[str, Any]) -> None:
    """The codes of schemas/server/error.json (which the test above checks against the code)
    are all named in the AsyncAPI document's `error` message."""
    definitions = schema("server/error.json")["definitions"]
    codes = {
        *definitions["run_error"]["properties"]["code"]["enum"],
        *definitions["frame_error"]["properties"]["code"]["enum"],
    }
    description = asyncapi["components"]["messages"]["error"]["description"]
    missing = sorted(code for code in codes if f"`{code}`" not in description)
    assert not missing, f"error codes missing from asyncapi.yaml's error message: {missing}"


def test_every_handshake_answer_is_in_asyncapi(asyncapi: dict[str, Any]) -> None:
    description = asyncapi["channels"]["sections"]["description"]
    for status, code in handshake_answers():
        assert re.search(rf"\|\s*{status}\s*\|\s*`{code}`\s*\|", description), (status, code)


def handshake_answers() -> set[tuple[str, str]]:
    """Every (HTTP status, code) the edge answers a WebSocket handshake with."""
    answers: set[tuple[str, str]] = set()
    for path in EDGE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        answers.update(re.findall(r'(?:json_error|AuthError)\(\s*(\d{3}),\s*"(\w+)"', text))
    assert ("401", "missing_token") in answers and ("503", "shutting_down") in answers
    return answers


def test_every_handshake_rejection_is_documented(doc: str) -> None:
    """Every (HTTP status, code) the edge answers a handshake with is in a table of the doc."""
    undocumented = sorted(
        f"{status} {code}"
        for status, code in handshake_answers()
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
