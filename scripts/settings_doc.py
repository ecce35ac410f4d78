"""Renders the configuration table of docs/operations.md from the settings dataclasses, so
the docs list exactly what the code reads. `python scripts/settings_doc.py` rewrites the
table; `--check` only reports drift (the test suite runs the check)."""

from __future__ import annotations

import ast
import itertools
import re
import sys
from pathlib import Path

from services.common import defaults

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
ENV = re.compile(r"`(DOCGEN_[A-Z0-9_]+)`")
# Where settings classes live: the services, and the developer tools (`make run`'s supervisor).
FOLDERS = ("services", "tools")


def settings_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    files = [(folder, path) for folder in FOLDERS for path in (ROOT / folder).rglob("*.py")]
    for folder, path in sorted(files, key=lambda found: found[1].relative_to(ROOT / found[0])):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            body = node.body
            for field, doc in itertools.pairwise(body):
                if not (isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr)):
                    continue
                if not (isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
                    continue
                text = " ".join(doc.value.value.split())
                names = ENV.findall(text)
                if not names:
                    continue
                default = _default_text(field.value)
                meaning = re.sub(r"\s*\(`DOCGEN_[A-Z0-9_]+`\)", "", text).replace("|", "\\|")
                service = path.relative_to(ROOT / folder).parts[0].removesuffix(".py")
                rows.append((names[0], f"`{default}`", service, meaning))
    return rows


def _default_text(value: ast.expr | None) -> str:
    """The default as source text; a name of services/common/defaults.py as its value, which
    is what an operator wants to read."""
    if value is None:
        return ""
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "field":  # field(default=…)
        default = next((k.value for k in value.keywords if k.arg == "default"), None)
        if default is not None:
            return _default_text(default)
    if isinstance(value, ast.Name) and value.id.isupper() and hasattr(defaults, value.id):
        return repr(getattr(defaults, value.id))
    return ast.unparse(value)


def render() -> str:
    merged: dict[str, list[str]] = {}
    for name, default, service, meaning in settings_rows():
        if name in merged:  # read by several services: one row, first description
            if service not in merged[name][1]:
                merged[name][1] += f", {service}"
            continue
        merged[name] = [default, service, meaning]
    lines = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {d} | {s} | {m} |" for name, (d, s, m) in merged.items()]
    return "\n".join(lines)


def main() -> int:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{START}\n{render()}\n{END}{tail}"
    if "--check" in sys.argv:
        if updated != text:
            print("docs/operations.md is stale: run python scripts/settings_doc.py")
            return 1
        return 0
    DOC.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
