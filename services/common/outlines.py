"""An outline as JSON (a `generate` frame's, or a planner's answer, both already checked
against `schemas/client/generate.json`) turned into the `docgen.v1.Outline` message."""

from __future__ import annotations

from typing import Any

from docgen.v1 import outline_pb2


def outline_from_json(outline: dict[str, Any]) -> outline_pb2.Outline:
    """The message of a schema-valid outline object."""
    return outline_pb2.Outline(
        document_id=outline["document_id"],
        title=outline["title"],
        language=outline.get("language", ""),
        sections=[
            outline_pb2.OutlineSection(
                id=section["id"],
                title=section["title"],
                brief=section.get("brief", ""),
                # JSON Schema counts 600.0 as an integer; protobuf does not.
                target_tokens=int(section["target_tokens"]),
            )
            for section in outline["sections"]
        ],
    )
