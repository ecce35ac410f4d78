"""Where a taken-over run picks up, read from the events its log holds."""

from __future__ import annotations

from docgen.v1 import events_pb2, outline_pb2, summary_pb2

from services.generator.resume import resume_point

OUTLINE = outline_pb2.Outline(
    title="T",
    sections=[outline_pb2.OutlineSection(id=s, title=s.upper(), target_tokens=10) for s in "abc"],
)
STOP = events_pb2.FINISH_REASON_STOP


def log(*payloads: dict[str, object]) -> list[events_pb2.RunEvent]:
    return [events_pb2.RunEvent(seq=i + 1, **p) for i, p in enumerate(payloads)]  # type: ignore[arg-type]


def start(index: int, attempt: int = 1) -> dict[str, object]:
    return {
        "section_start": events_pb2.SectionStart(
            section_id="abc"[index], index=index, attempt=attempt
        )
    }


def chunk(index: int, text: str) -> dict[str, object]:
    return {
        "section_chunk": events_pb2.SectionChunk(section_id="abc"[index], index=index, delta=text)
    }


def end(index: int, reason: int = STOP, tokens: int = 3) -> dict[str, object]:
    return {
        "section_end": events_pb2.SectionEnd(
            section_id="abc"[index], index=index, finish_reason=reason, output_tokens=tokens
        )
    }  # type: ignore[arg-type]


def summary(index: int) -> dict[str, object]:
    return {"summary_update": events_pb2.SummaryUpdate(through_section_id="abc"[index])}


def point(events: list[events_pb2.RunEvent]):  # type: ignore[no-untyped-def]
    return resume_point(
        OUTLINE,
        events,
        summary=summary_pb2.GlobalSummary(text="S"),
        summary_through=0,
        summary_version=1,
        elapsed_s=2.0,
    )


def test_the_interrupted_section_restarts_with_the_next_attempt() -> None:
    resume = point(
        log(start(0), chunk(0, "x"), end(0), summary(0), start(1), start(1, 2), chunk(1, "y"))
    )
    assert (resume.next_index, resume.next_attempt) == (1, 3)
    assert resume.pending_summary_text is None and resume.end_status is None
    assert (resume.sections_completed, resume.output_tokens, resume.summary.text) == (1, 3, "S")


def test_a_section_whose_summary_step_never_ran_gets_it_first() -> None:
    resume = point(log(start(0), chunk(0, "He"), chunk(0, "llo"), end(0)))
    assert (resume.next_index, resume.next_attempt) == (1, 1)
    assert resume.pending_summary_text == "Hello"
    failed_summary = {"error": events_pb2.RunError(code="summary_unavailable", section_id="a")}
    assert point(log(start(0), end(0), failed_summary)).pending_summary_text is None


def test_a_run_already_ending_only_gets_its_run_end() -> None:
    failing = point(log(start(0), end(0, events_pb2.FINISH_REASON_ERROR)))
    assert failing.end_status == events_pb2.RUN_STATUS_FAILED
    cancelled = point(log(start(0), end(0, events_pb2.FINISH_REASON_CANCELLED)))
    assert cancelled.end_status == events_pb2.RUN_STATUS_CANCELLED


def test_every_section_done_leaves_nothing_to_write() -> None:
    events = log(*[e for i in range(3) for e in (start(i), end(i), summary(i))])
    resume = point(events)
    assert resume.next_index == 3 and resume.pending_summary_text is None
