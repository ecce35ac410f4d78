"""Where a run taken over from another generator picks up: read from the events its log
already holds, plus the summary state stored with them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from docgen.v1 import events_pb2, outline_pb2, summary_pb2

_FINISHED = (
    events_pb2.FINISH_REASON_STOP,
    events_pb2.FINISH_REASON_LENGTH,
    events_pb2.FINISH_REASON_CONTENT_FILTER,
)


@dataclass(frozen=True)
class ResumePoint:
    next_index: int
    """The first section without a successful `section_end` (= number of sections: none)."""
    next_attempt: int
    """The attempt that section starts with: one more than the last one in the log, so
    clients discard the interrupted attempt's text."""
    end_status: events_pb2.RunStatus.ValueType | None = None
    """Set when the log shows the run already ending (a section ended `error` or
    `cancelled`): the new writer only appends `run_end` with this status."""
    pending_summary_text: str | None = None
    """The text of section `next_index - 1` when its summary step never ran."""
    summary: summary_pb2.GlobalSummary = field(default_factory=summary_pb2.GlobalSummary)
    summary_through: int = -1
    summary_version: int = 0
    output_tokens: int = 0
    sections_completed: int = 0
    elapsed_s: float = 0.0
    """How long the run had been going, for `run_end.duration_ms`."""


def resume_point(
    outline: outline_pb2.Outline,
    events: Iterable[events_pb2.RunEvent],
    *,
    summary: summary_pb2.GlobalSummary,
    summary_through: int,
    summary_version: int,
    elapsed_s: float,
) -> ResumePoint:
    completed: set[int] = set()
    attempts: dict[int, int] = {}
    texts: dict[int, list[str]] = {}
    summarized: set[str] = set()  # section ids whose summary step ran (updated or failed)
    end_status: events_pb2.RunStatus.ValueType | None = None
    output_tokens = 0
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "section_start":
            attempts[event.section_start.index] = event.section_start.attempt
            texts[event.section_start.index] = []
        elif kind == "section_chunk":
            texts.setdefault(event.section_chunk.index, []).append(event.section_chunk.delta)
        elif kind == "section_end":
            end = event.section_end
            if end.finish_reason in _FINISHED:
                completed.add(end.index)
                output_tokens += end.output_tokens
            elif end.finish_reason == events_pb2.FINISH_REASON_CANCELLED:
                end_status = events_pb2.RUN_STATUS_CANCELLED
            else:
                end_status = events_pb2.RUN_STATUS_FAILED
        elif kind == "summary_update":
            summarized.add(event.summary_update.through_section_id)
        elif kind == "error":
            if event.error.code == "summary_unavailable":
                summarized.add(event.error.section_id)
            elif not event.error.section_id:
                end_status = events_pb2.RUN_STATUS_FAILED  # a run-level error ends the run
    next_index = next(
        (i for i in range(len(outline.sections)) if i not in completed), len(outline.sections)
    )
    pending_summary_text = None
    if next_index > 0 and outline.sections[next_index - 1].id not in summarized:
        pending_summary_text = "".join(texts.get(next_index - 1, []))
    return ResumePoint(
        next_index=next_index,
        next_attempt=attempts.get(next_index, 0) + 1,
        end_status=end_status,
        pending_summary_text=pending_summary_text,
        summary=summary,
        summary_through=summary_through,
        summary_version=summary_version,
        output_tokens=output_tokens,
        sections_completed=len(completed),
        elapsed_s=elapsed_s,
    )
