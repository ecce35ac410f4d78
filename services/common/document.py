"""The finished document of a run, built from its event log alone: each section's exact text
(its last attempt's chunks), the title, the last summary, and its Markdown and JSON
renderings (`GET /v1/runs/{run_id}/document`, gRPC `GetDocument`). Plain data: no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from docgen.v1 import document_pb2, events_pb2

# Sections whose text is the document's; a cancelled or failed section's partial text is
# kept in the JSON (with its finish reason) but not written into the Markdown.
WRITTEN = frozenset(
    {
        events_pb2.FINISH_REASON_STOP,
        events_pb2.FINISH_REASON_LENGTH,
        events_pb2.FINISH_REASON_CONTENT_FILTER,
    }
)


class RunNotEnded(Exception):
    """The run has no `run_end` yet: its document is still being written."""


def finish_reason_name(value: int) -> str:
    """`FINISH_REASON_STOP` -> `stop`, as the protocol frames spell it."""
    return events_pb2.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()  # type: ignore[arg-type]


def run_status_name(value: int) -> str:
    """`RUN_STATUS_COMPLETED` -> `completed`."""
    return events_pb2.RunStatus.Name(value).removeprefix("RUN_STATUS_").lower()  # type: ignore[arg-type]


def render_markdown(title: str, sections: Iterable[tuple[str, str]]) -> str:
    """`# title`, then `## heading` and the exact text of each section: byte for byte what
    `docgen generate --output FILE` writes (clients/markdown.py)."""
    return f"# {title}\n" + "".join(f"\n## {heading}\n\n{text}\n" for heading, text in sections)


def document_from_events(events: Iterable[events_pb2.RunEvent]) -> document_pb2.Document:
    """The document of an ended run's whole log (from `seq` 1); raises `RunNotEnded`."""
    document = document_pb2.Document()
    titles: dict[str, str] = {}
    texts: dict[str, list[str]] = {}
    order: list[str] = []
    ended: dict[str, document_pb2.DocumentSection] = {}
    status: int | None = None
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "run_started":
            started = event.run_started
            document.run_id = event.run_id
            document.document_id = started.document_id
            # Logs written before `title` was added fall back to the id.
            document.title = started.title or started.document_id
            document.language = started.language
            order = list(started.section_ids)
        elif kind == "section_start":
            start = event.section_start
            titles[start.section_id] = start.title
            texts[start.section_id] = []  # a new attempt voids the earlier text
        elif kind == "section_chunk":
            texts.setdefault(event.section_chunk.section_id, []).append(event.section_chunk.delta)
        elif kind == "section_end":
            end = event.section_end
            ended[end.section_id] = document_pb2.DocumentSection(
                id=end.section_id,
                title=titles.get(end.section_id, end.section_id),
                text="".join(texts.get(end.section_id, ())),
                text_sha256=end.text_sha256,
                finish_reason=end.finish_reason,
            )
        elif kind == "summary_update":
            document.summary = event.summary_update.summary
        elif kind == "run_end":
            status = event.run_end.status
    if status is None:
        raise RunNotEnded("the run is still being written")
    document.status = status  # type: ignore[assignment]
    document.sections.extend(ended[section_id] for section_id in order if section_id in ended)
    document.markdown = render_markdown(
        document.title,
        ((s.title, s.text) for s in document.sections if s.finish_reason in WRITTEN),
    )
    return document


def text_matches(section: document_pb2.DocumentSection) -> bool:
    """Whether the assembled text is the text the writer hashed."""
    return hashlib.sha256(section.text.encode()).hexdigest() == section.text_sha256


def document_to_json(document: document_pb2.Document) -> dict[str, Any]:
    """`?format=json`: every ended section with its exact text and hash, and the summary."""
    return {
        "run_id": document.run_id,
        "document_id": document.document_id,
        "title": document.title,
        "language": document.language or None,
        "status": run_status_name(document.status),
        "sections": [
            {
                "id": section.id,
                "title": section.title,
                "text": section.text,
                "text_sha256": section.text_sha256,
                "finish_reason": finish_reason_name(section.finish_reason),
            }
            for section in document.sections
        ],
        "summary": document.summary or None,
    }
