"""The finished document is built from the run's log alone (services/common/document.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from docgen.v1 import events_pb2

from clients.markdown import render_markdown as cli_render_markdown
from services.common.document import (
    RunNotEnded,
    document_from_events,
    document_to_json,
    text_matches,
)


class LogBuilder:
    def __init__(self) -> None:
        self.events: list[events_pb2.RunEvent] = []

    def add(self, **payload: Any) -> None:
        self.events.append(events_pb2.RunEvent(run_id="run_x", seq=len(self.events) + 1, **payload))

    def section(
        self,
        index: int,
        sid: str,
        title: str,
        parts: list[str],
        *,
        attempt: int = 1,
        reason: events_pb2.FinishReason.ValueType = events_pb2.FINISH_REASON_STOP,
    ) -> str:
        self.add(
            section_start=events_pb2.SectionStart(
                section_id=sid, index=index, title=title, target_tokens=10, attempt=attempt
            )
        )
        for part in parts:
            self.add(section_chunk=events_pb2.SectionChunk(section_id=sid, index=index, delta=part))
        text = "".join(parts)
        self.add(
            section_end=events_pb2.SectionEnd(
                section_id=sid,
                index=index,
                finish_reason=reason,
                chars=len(text),
                text_sha256=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
        return text


def started(title: str = "Pan y más") -> events_pb2.RunStarted:
    return events_pb2.RunStarted(
        document_id="doc-1",
        section_ids=["a", "b"],
        title=title,
        plan_source=events_pb2.PLAN_SOURCE_PLANNER,
    )


def test_a_completed_run_renders_every_section_exactly() -> None:
    log = LogBuilder()
    log.add(run_started=started())
    # A first attempt that broke off is void: only the last attempt's text counts.
    log.add(section_start=events_pb2.SectionStart(section_id="a", title="Uno", attempt=1))
    log.add(section_chunk=events_pb2.SectionChunk(section_id="a", delta="lost "))
    text_a = log.section(0, "a", "Uno", ["Hola", " mundo\n\n", "  ñ  "], attempt=2)
    log.add(
        summary_update=events_pb2.SummaryUpdate(version=1, through_section_id="a", summary="s1")
    )
    text_b = log.section(1, "b", "Dos", ["Fin."])
    log.add(
        summary_update=events_pb2.SummaryUpdate(version=2, through_section_id="b", summary="s2")
    )
    log.add(run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_COMPLETED))

    document = document_from_events(log.events)

    assert [(s.id, s.title, s.text) for s in document.sections] == [
        ("a", "Uno", text_a),
        ("b", "Dos", text_b),
    ]
    assert all(text_matches(s) for s in document.sections)
    assert document.markdown == cli_render_markdown("Pan y más", [("Uno", text_a), ("Dos", text_b)])
    assert document.markdown == f"# Pan y más\n\n## Uno\n\n{text_a}\n\n## Dos\n\n{text_b}\n"
    assert document_to_json(document) == {
        "run_id": "run_x",
        "document_id": "doc-1",
        "title": "Pan y más",
        "language": None,
        "status": "completed",
        "sections": [
            {
                "id": "a",
                "title": "Uno",
                "text": text_a,
                "text_sha256": hashlib.sha256(text_a.encode()).hexdigest(),
                "finish_reason": "stop",
            },
            {
                "id": "b",
                "title": "Dos",
                "text": text_b,
                "text_sha256": hashlib.sha256(text_b.encode()).hexdigest(),
                "finish_reason": "stop",
            },
        ],
        "summary": "s2",
    }


def test_a_running_run_has_no_document_yet() -> None:
    log = LogBuilder()
    log.add(run_started=started())
    log.section(0, "a", "Uno", ["x"])
    with pytest.raises(RunNotEnded):
        document_from_events(log.events)


def test_a_failed_run_keeps_its_ended_sections_and_marks_the_partial_one() -> None:
    log = LogBuilder()
    log.add(run_started=started())
    text_a = log.section(0, "a", "Uno", ["Bien."])
    log.section(1, "b", "Dos", ["a medi"], reason=events_pb2.FINISH_REASON_ERROR)
    log.add(run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_FAILED))

    document = document_from_events(log.events)
    as_json = document_to_json(document)
    assert as_json["status"] == "failed"
    assert [(s["id"], s["finish_reason"]) for s in as_json["sections"]] == [
        ("a", "stop"),
        ("b", "error"),
    ]
    assert as_json["summary"] is None
    # The Markdown is the document: a section that failed mid-way is not part of it.
    assert document.markdown == cli_render_markdown("Pan y más", [("Uno", text_a)])


def test_a_log_without_a_title_falls_back_to_the_document_id() -> None:
    log = LogBuilder()
    log.add(run_started=started(title=""))
    log.add(run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_CANCELLED))
    document = document_from_events(log.events)
    assert document.markdown == "# doc-1\n"
    assert document_to_json(document)["sections"] == []
