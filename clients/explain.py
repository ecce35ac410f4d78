"""Turns the edge's answers about a bad outline (`invalid_frame`, `invalid_outline`) into a
sentence a person can act on: what is wrong, in words, where (section number and title), and
the rule for that field. The stable error code and the server's JSON path stay at the end.

The same rules are written for the page in `clients/js/docgen.js` (`explainError`); keep the
two in step. The wire message itself is unchanged (`docs/protocol.md`, "Error codes")."""

from __future__ import annotations

import re
from typing import Any

FIELD_RULES = {
    "document_id": 'a name you choose for the document, 1–128 characters, e.g. "my-guide"',
    "title": "1–300 characters, not only spaces",
    "sections": "a list of 1–64 sections, each with id, title and target_tokens",
    "id": "unique in the outline, up to 64 letters, digits and _ . : -",
    "brief": "optional: what the section should cover, up to 4000 characters",
    "target_tokens": (
        "the section's length in tokens, a whole number from 1 to 4096 "
        "(one token is about 0.75 English words)"
    ),
    "language": "optional: a language tag such as en, es or pt-BR",
}

_SERVER_PATH = re.compile(r"^(\$[^:\s]*): (.*)$", re.DOTALL)
_SECTION_PATH = re.compile(r"sections\[(\d+)\](?:\.(\w+))?")
_REQUIRED = re.compile(r"^'([^']+)' is a required property$")
_UNEXPECTED = re.compile(r"^Additional properties are not allowed \((.+) (?:was|were) unexpected")
_BELOW = re.compile(r"^(-?[\d.]+) is less than the minimum of (-?[\d.]+)$")
_ABOVE = re.compile(r"^(-?[\d.]+) is greater than the maximum of (-?[\d.]+)$")
_TYPE = re.compile(r"^(.*) is not of type '(\w+)'$", re.DOTALL)
_TYPE_WORDS = {
    "string": "text in quotes",
    "integer": "a whole number",
    "object": "an object { … }",
    "array": "a list [ … ]",
}


def _where(path: str, outline: dict[str, Any] | None) -> tuple[str, str | None]:
    """`('section 2 ("Ovens")', 'target_tokens')` for `$.outline.sections[1].target_tokens`."""
    match = _SECTION_PATH.search(path)
    if match:
        index = int(match.group(1))
        place = f"section {index + 1}"
        sections = (outline or {}).get("sections")
        if isinstance(sections, list) and index < len(sections):
            section = sections[index]
            title = section.get("title") if isinstance(section, dict) else None
            if isinstance(title, str) and title.strip():
                place += f' "{title.strip()}"'
        return place, match.group(2)
    field = path.rsplit(".", 1)[-1] if path.startswith("$.outline.") else None
    if path in ("$", "$.outline") or field is None:
        return "the outline", None
    return "the outline", field


def _rule(field: str | None) -> str:
    rule = FIELD_RULES.get(field or "")
    return f' "{field}": {rule}.' if rule else ""


def _problem(problem: str, field: str | None) -> tuple[str, str | None]:
    """The problem in words, and the field it is about when the message names it."""
    if match := _REQUIRED.match(problem):
        missing = match.group(1)
        return f'has no "{missing}"; add it', missing
    if match := _UNEXPECTED.match(problem):
        names = match.group(1)
        return f"has a field docgen does not know ({names}); remove it or check its spelling", None
    if match := _BELOW.match(problem):
        return f'"{field}" is {match.group(1)}, below the minimum of {match.group(2)}', field
    if match := _ABOVE.match(problem):
        return f'"{field}" is {match.group(1)}, above the maximum of {match.group(2)}', field
    if match := _TYPE.match(problem):
        wanted = _TYPE_WORDS.get(match.group(2), match.group(2))
        return f'"{field}" is {match.group(1)}, but it must be {wanted}', field
    if problem.endswith(("should be non-empty", "is too short")):
        return f'"{field}" is empty', field
    if problem.endswith("is too long") or problem.startswith("fails maxLength"):
        return f'"{field}" is too long', field
    if "does not match" in problem:
        return f'"{field}" has characters that are not allowed', field
    return problem, field


def explain(code: str, message: str, outline: dict[str, Any] | None = None) -> str:
    """A friendly sentence for an error answer, ending with `(code at path)`."""
    if code == "invalid_frame" and (match := _SERVER_PATH.match(message)):
        path, problem = match.groups()
        place, field = _where(path, outline)
        words, field = _problem(problem, field)
        joint = " " if words.startswith("has ") else ": "
        return f"{place}{joint}{words}.{_rule(field)} ({code} at {path})"
    if code == "invalid_outline":
        parts = []
        for item in message.split("; "):
            place, _ = _where(item, outline)
            text = re.sub(r"^sections\[\d+\]\.?", "", item)
            text = re.sub(r"^(id|title|brief|target_tokens)\b", r'"\1"', text)
            parts.append(f"{place}: {text}" if _SECTION_PATH.match(item) else item)
        return "the outline needs fixing: " + "; ".join(parts) + f" ({code})"
    return f"{message} ({code})"
