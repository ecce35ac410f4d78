"""What the generator accepts as an outline, whichever door it came in by.

The limits are read from the WebSocket contract's JSON Schema (`schemas/client/generate.json`,
installed as `services.contract`): gRPC callers never pass the edge's schema check, so they are
held to the very same rules here, plus what a schema cannot say (unique section ids, control
characters, a whole title of spaces, the total token budget). tests/test_outline.py checks
that every constraint of the schema's outline is enforced here.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import Any

from docgen.v1 import outline_pb2

from services.generator.errors import InvalidOutline


def outline_schema() -> dict[str, Any]:
    generate = json.loads(
        files("services.contract").joinpath("client", "generate.json").read_text("utf-8")
    )
    schema: dict[str, Any] = generate["properties"]["outline"]
    return schema


def _full_match(pattern: str) -> re.Pattern[str]:
    """An ECMA-262 `^…$` pattern as a Python regex for `fullmatch` (Python's `$` would also
    match before a final newline)."""
    if not (pattern.startswith("^") and pattern.endswith("$")) or "|" in pattern:
        raise RuntimeError(f"outline schema pattern {pattern!r} is not a plain ^…$ pattern")
    return re.compile(pattern[1:-1])


OUTLINE_SCHEMA = outline_schema()
_SECTION_SCHEMA = OUTLINE_SCHEMA["properties"]["sections"]["items"]["properties"]

MAX_SECTIONS: int = OUTLINE_SCHEMA["properties"]["sections"]["maxItems"]
MAX_DOCUMENT_ID_CHARS: int = OUTLINE_SCHEMA["properties"]["document_id"]["maxLength"]
MAX_TITLE_CHARS: int = OUTLINE_SCHEMA["properties"]["title"]["maxLength"]
MAX_SECTION_TITLE_CHARS: int = _SECTION_SCHEMA["title"]["maxLength"]
MAX_BRIEF_CHARS: int = _SECTION_SCHEMA["brief"]["maxLength"]
MIN_TARGET_TOKENS: int = _SECTION_SCHEMA["target_tokens"]["minimum"]
MAX_TARGET_TOKENS: int = _SECTION_SCHEMA["target_tokens"]["maximum"]
SECTION_ID_PATTERN: str = _SECTION_SCHEMA["id"]["pattern"]
_SECTION_ID = _full_match(SECTION_ID_PATTERN)
MAX_OUTLINE_TOKENS = 32_768
"""The default of `DOCGEN_MAX_OUTLINE_TOKENS` (a deployment setting, not in the schema)."""
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,3}$")  # Outline.language
# C0 controls, DEL, C1 controls: invisible, and able to reshape a prompt or a terminal; no
# outline needs them. A brief may hold tabs and newlines; ids and titles are single-line.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_CHARACTER_BUT_TAB_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text_problem(where: str, text: str, max_chars: int, multiline: bool = False) -> str | None:
    if len(text) > max_chars:
        return f"{where} is longer than {max_chars} characters"
    control = (CONTROL_CHARACTER_BUT_TAB_NEWLINE if multiline else CONTROL_CHARACTER).search(text)
    if control is not None:
        return f"{where} contains the control character U+{ord(control.group()):04X}"
    return None


def validate_outline(
    outline: outline_pb2.Outline, *, max_total_tokens: int = MAX_OUTLINE_TOKENS
) -> None:
    """Raises `InvalidOutline` listing every problem of `outline`."""
    problems: list[str] = []
    if not outline.document_id:
        problems.append("document_id is empty")
    if not outline.title.strip():
        problems.append("title is empty")
    if not outline.sections:
        problems.append("sections is empty: an outline needs at least one section")
    if len(outline.sections) > MAX_SECTIONS:
        problems.append(f"sections has {len(outline.sections)} entries, more than {MAX_SECTIONS}")
        raise InvalidOutline("; ".join(problems))  # not worth listing each one's problems
    texts = [
        ("document_id", outline.document_id, MAX_DOCUMENT_ID_CHARS, False),
        ("title", outline.title, MAX_TITLE_CHARS, False),
    ]
    for index, section in enumerate(outline.sections):
        texts += [
            (f"sections[{index}].title", section.title, MAX_SECTION_TITLE_CHARS, False),
            (f"sections[{index}].brief", section.brief, MAX_BRIEF_CHARS, True),
        ]
    problems += [
        problem
        for where, text, limit, multiline in texts
        if (problem := _text_problem(where, text, limit, multiline))
    ]
    if outline.language and not LANGUAGE_TAG.match(outline.language):
        problems.append(f"language {outline.language[:40]!r} is not a BCP 47 tag such as 'es'")
    total_tokens = sum(section.target_tokens for section in outline.sections)
    if total_tokens > max_total_tokens:
        problems.append(
            f"the sections' target_tokens add up to {total_tokens}, more than {max_total_tokens}"
        )
    seen: set[str] = set()
    for index, section in enumerate(outline.sections):
        where = f"sections[{index}]"
        if not section.id:
            problems.append(f"{where}.id is empty")
        elif not _SECTION_ID.fullmatch(section.id):
            shown = section.id if len(section.id) <= 40 else section.id[:39] + "…"
            problems.append(f"{where}.id {shown!r} does not match {SECTION_ID_PATTERN}")
        elif section.id in seen:
            problems.append(f"{where}.id {section.id!r} is used by an earlier section")
        seen.add(section.id)
        if not section.title.strip():
            problems.append(f"{where}.title is empty")
        if not MIN_TARGET_TOKENS <= section.target_tokens <= MAX_TARGET_TOKENS:
            problems.append(
                f"{where}.target_tokens must be {MIN_TARGET_TOKENS}..{MAX_TARGET_TOKENS}, "
                f"got {section.target_tokens}"
            )
    if problems:
        raise InvalidOutline("; ".join(problems))
