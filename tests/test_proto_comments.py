"""Every field and oneof in protos/docgen/v1/*.proto says whether it is `Required.`,
`Optional.` or `Output only.` in the first words of its comment (STYLE.md, buf style)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROTOS = sorted((Path(__file__).resolve().parents[1] / "protos" / "docgen" / "v1").glob("*.proto"))
MARKERS = ("Required.", "Optional.", "Output only.")

# `repeated Foo bar = 3;`, `map<string, int32> counts = 4;`, `string id = 1 [deprecated = true];`.
# Enum values (`NAME = 0;`) have no type before the name, so they do not match.
FIELD = re.compile(
    r"^\s*(?:repeated\s+|optional\s+)?(?:map\s*<[^>]+>|[A-Za-z_][\w.]*)\s+(\w+)\s*=\s*\d+\s*(?:\[.*\])?\s*;"
)
ONEOF = re.compile(r"^\s*oneof\s+(\w+)\s*\{")


def declarations(path: Path) -> list[tuple[int, str, str]]:
    """(line number, name, the comment block right above it) of every field and oneof."""
    found: list[tuple[int, str, str]] = []
    comment: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("//"):
            comment.append(stripped[2:].strip())
            continue
        match = FIELD.match(line) or ONEOF.match(line)
        if match:
            found.append((number, match.group(1), " ".join(comment)))
        comment = []
    return found


def test_the_protos_are_found() -> None:
    assert {p.name for p in PROTOS} >= {
        "events.proto",
        "generator.proto",
        "outline.proto",
        "summary.proto",
    }


@pytest.mark.parametrize("path", PROTOS, ids=lambda p: p.name)
def test_every_field_says_required_optional_or_output_only(path: Path) -> None:
    fields = declarations(path)
    assert fields, f"no fields parsed in {path.name}"
    unmarked = [
        f"{path.name}:{number} {name}: {comment or '(no comment)'}"
        for number, name, comment in fields
        if not comment.startswith(MARKERS)
    ]
    assert not unmarked, (
        "fields whose comment does not start with "
        + " / ".join(MARKERS)
        + ":\n"
        + "\n".join(unmarked)
    )


def test_the_parser_sees_fields_oneofs_and_skips_enum_values(tmp_path: Path) -> None:
    proto = tmp_path / "x.proto"
    proto.write_text(
        "message M {\n"
        "  // Required. An id.\n"
        "  string id = 1;\n"
        "  repeated string tags = 2 [deprecated = true];\n"
        "  // Output only. One of.\n"
        "  oneof payload {\n"
        "    // Output only. Text.\n"
        "    string text = 3;\n"
        "  }\n"
        "  // Optional. A map.\n"
        "  map<string, int32> counts = 4;\n"
        "}\n"
        "enum E {\n"
        "  E_UNSPECIFIED = 0;\n"
        "}\n",
        encoding="utf-8",
    )
    assert [(name, comment) for _, name, comment in declarations(proto)] == [
        ("id", "Required. An id."),
        ("tags", ""),
        ("payload", "Output only. One of."),
        ("text", "Output only. Text."),
        ("counts", "Optional. A map."),
    ]
