"""Writes one run: sections in outline order, each followed by a summary update
(`summary_step.py`), every step appended to the run's log. Always ends the log with `run_end`,
whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time

from docgen.v1 import events_pb2, outline_pb2, summary_pb2

from services.common import language as languages
from services.common import metrics
from services.common.tracing import outgoing_headers
from services.generator.prompts import STOP_SEQUENCES, build_section_messages
from services.generator.resume import ResumePoint
from services.generator.runs.log import RunWriter
from services.generator.section_writer import LLMError, SectionShape, SectionWriter
from services.generator.settings import GeneratorSettings
from services.generator.summary_step import SummaryStep, SummaryUpdater

log = logging.getLogger(__name__)

FINISH_REASONS = {
    "stop": events_pb2.FINISH_REASON_STOP,
    "length": events_pb2.FINISH_REASON_LENGTH,
    "content_filter": events_pb2.FINISH_REASON_CONTENT_FILTER,
}


async def document_language(outline: outline_pb2.Outline) -> str:
    """`Outline.language` (a BCP 47 tag, normalised), or the language detected from the
    outline's titles and briefs (in a thread: the first detection loads a model)."""
    if outline.language.strip():
        with contextlib.suppress(languages.InvalidLanguage):  # validate_outline refuses it
            return languages.normalize_tag(outline.language)
    texts = [outline.title, *(t for s in outline.sections for t in (s.title, s.brief))]
    detection = await asyncio.to_thread(languages.detect, texts)
    return detection.language


class _SectionFailed(Exception):
    pass


class RunExecution(SummaryStep):
    """The state of one run while it is being written."""

    def __init__(
        self,
        *,
        run_log: RunWriter,
        outline: outline_pb2.Outline,
        request_id: str,
        writer: SectionWriter,
        summaries: SummaryUpdater,
        settings: GeneratorSettings,
        plan_source: events_pb2.PlanSource.ValueType = events_pb2.PLAN_SOURCE_INLINE,
    ) -> None:
        self._log = run_log
        self._outline = outline
        self._request_id = request_id
        self._plan_source = plan_source
        self._writer = writer
        self._summaries = summaries
        self._settings = settings
        self._summary = summary_pb2.GlobalSummary()
        self._language = languages.DEFAULT_LANGUAGE  # resolved when the run starts
        # Index of the last section the current summary covers (-1: none yet). A refinement
        # for an older section never replaces a summary that covers a newer one.
        self._summary_through = -1
        self._summary_version = 0
        # Index of the last section whose summary step told the client something (an update,
        # or `summary_unavailable`): `run_end{completed}` never comes before the last one's.
        self._summary_reported = -1
        # Finished sections whose summary update failed, to fold in once the service is back.
        self._missed_sections: list[summary_pb2.FinishedSection] = []
        self._refinement: asyncio.Task[None] | None = None
        self._output_tokens = 0
        self._sections_completed = 0

    @property
    def summary_text(self) -> str:
        """The latest summary available; this is what the next section's prompt gets."""
        return self._summary.text

    async def execute(self, resume: ResumePoint | None = None) -> None:
        """Writes the run from its start or, when another generator's run is taken over, from
        `resume`: the interrupted section starts again with its next attempt."""
        started = time.monotonic()
        status = events_pb2.RUN_STATUS_COMPLETED
        # The same outline always gives the same language, so a generator taking a run over
        # finds the one its run_started named.
        self._language = await document_language(self._outline)
        if resume is None:
            self._log.append(
                run_started=events_pb2.RunStarted(
                    document_id=self._outline.document_id,
                    request_id=self._request_id,
                    section_ids=[s.id for s in self._outline.sections],
                    plan_source=self._plan_source,
                    title=self._outline.title,
                    language=self._language,
                )
            )
            resume = ResumePoint(next_index=0, next_attempt=1)
        else:
            started -= resume.elapsed_s
            self._restore(resume)
        try:
            if resume.end_status is not None:
                status = resume.end_status  # the previous writer was ending it already
            else:
                await self._write_sections(resume)
            if self._refinement is not None:
                # The last refinement may still improve the final summary; it has its own deadline.
                await self._refinement
        except _SectionFailed:
            status = events_pb2.RUN_STATUS_FAILED
        except asyncio.CancelledError:
            status = events_pb2.RUN_STATUS_CANCELLED
        except Exception as error:  # a bug must still end the run properly
            log.exception("run %s failed unexpectedly", self._log.run_id)
            self._append_error(
                "internal",
                f"internal error ({type(error).__name__}); start a new run",
                retryable=True,
            )
            status = events_pb2.RUN_STATUS_FAILED
        finally:
            if self._refinement is not None and not self._refinement.done():
                self._refinement.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._refinement
        last_index = len(self._outline.sections) - 1
        if status == events_pb2.RUN_STATUS_COMPLETED and self._summary_reported < last_index:
            self._append_error(
                "summary_unavailable",
                "the final summary could not be made; the document is complete without it",
                retryable=True,
                section_id=self._outline.sections[last_index].id,
            )
        duration_ms = int((time.monotonic() - started) * 1000)
        self._log.append(
            run_end=events_pb2.RunEnd(
                status=status,
                sections_completed=self._sections_completed,
                output_tokens=self._output_tokens,
                duration_ms=duration_ms,
            )
        )
        if self._log.handed_over:
            return  # not ended: another generator writes it on (and counts it)
        status_name = events_pb2.RunStatus.Name(status).removeprefix("RUN_STATUS_").lower()
        metrics.RUNS.labels(status_name).inc()
        log.info(
            "run ended",
            extra={
                "status": status_name,
                "duration_ms": duration_ms,
                "output_tokens": self._output_tokens,
            },
        )

    def _restore(self, resume: ResumePoint) -> None:
        self._summary = resume.summary
        self._summary_through = resume.summary_through
        self._summary_version = resume.summary_version
        self._output_tokens = resume.output_tokens
        self._sections_completed = resume.sections_completed
        unsummarized = 0 if resume.pending_summary_text is None else 1
        self._summary_reported = resume.next_index - 1 - unsummarized

    async def _write_sections(self, resume: ResumePoint) -> None:
        if resume.pending_summary_text is not None:
            index = resume.next_index - 1
            await self._update_summary(index, resume.pending_summary_text, time.monotonic())
        for index in range(resume.next_index, len(self._outline.sections)):
            first_attempt = resume.next_attempt if index == resume.next_index else 1
            text, ended_at = await self._write_section(index, first_attempt)
            await self._update_summary(index, text, ended_at)

    async def _write_section(self, index: int, first_attempt: int = 1) -> tuple[str, float]:
        section = self._outline.sections[index]
        messages = build_section_messages(
            self._outline, index, self.summary_text, language=self._language
        )
        shape = SectionShape(
            target_tokens=section.target_tokens,
            # The brief too: a small model may open by reading it back verbatim.
            titles=(self._outline.title, section.title, section.brief),
            language=self._language,
            stop=STOP_SEQUENCES,
        )
        max_tokens = math.ceil(section.target_tokens * self._settings.section_headroom)
        # A run taken over mid-section gets a whole new set of attempts: losing the
        # generator was not the LLM's fault.
        last_attempt = first_attempt + self._settings.section_attempts - 1
        for attempt in range(first_attempt, last_attempt + 1):
            started = time.monotonic()
            self._log.append(
                section_start=events_pb2.SectionStart(
                    section_id=section.id,
                    index=index,
                    title=section.title,
                    target_tokens=section.target_tokens,
                    attempt=attempt,
                )
            )
            parts: list[str] = []

            def on_delta(delta: str, parts: list[str] = parts) -> None:
                parts.append(delta)
                self._log.append(
                    section_chunk=events_pb2.SectionChunk(
                        section_id=section.id, index=index, delta=delta
                    )
                )

            try:
                result = await self._writer.write(
                    messages,
                    max_tokens=max_tokens,
                    shape=shape,
                    on_delta=on_delta,
                    extra_headers=outgoing_headers(),
                )
            except asyncio.CancelledError:
                self._end_section(
                    index,
                    "".join(parts),
                    events_pb2.FINISH_REASON_CANCELLED,
                    len(parts),
                    0,
                    started,
                )
                raise
            except LLMError as error:
                if error.retryable and error.code == "llm_stream_failed" and attempt < last_attempt:
                    log.warning(
                        "section attempt failed; retrying",
                        extra={"section_id": section.id, "attempt": attempt, "error": str(error)},
                    )
                    metrics.LLM_RETRIES.labels("section").inc()
                    continue
                self._end_section(
                    index, "".join(parts), events_pb2.FINISH_REASON_ERROR, len(parts), 0, started
                )
                self._append_error(
                    error.code, str(error), retryable=error.retryable, section_id=section.id
                )
                raise _SectionFailed from error
            self._output_tokens += result.output_tokens
            self._sections_completed += 1
            ended_at = self._end_section(
                index,
                result.text,
                FINISH_REASONS[result.finish_reason],
                result.output_tokens,
                result.ttft_ms,
                started,
            )
            return result.text, ended_at
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _end_section(
        self, index: int, text: str, reason: int, output_tokens: int, ttft_ms: int, started: float
    ) -> float:
        section = self._outline.sections[index]
        duration_s = time.monotonic() - started
        self._log.append(
            section_end=events_pb2.SectionEnd(
                section_id=section.id,
                index=index,
                finish_reason=reason,  # type: ignore[arg-type]
                chars=len(text),
                text_sha256=hashlib.sha256(text.encode()).hexdigest(),
                output_tokens=output_tokens,
                ttft_ms=ttft_ms,
                duration_ms=int(duration_s * 1000),
            )
        )
        metrics.SECTION_DURATION_SECONDS.observe(duration_s)
        if reason in (events_pb2.FINISH_REASON_STOP, events_pb2.FINISH_REASON_LENGTH):
            metrics.SECTION_TTFT_SECONDS.observe(ttft_ms / 1000)
            metrics.SECTION_OUTPUT_TOKENS.observe(output_tokens)
        log.info(
            "section ended",
            extra={
                "section_id": section.id,
                "finish_reason": events_pb2.FinishReason.Name(reason)  # type: ignore[arg-type]
                .removeprefix("FINISH_REASON_")
                .lower(),
                "output_tokens": output_tokens,
                "ttft_ms": ttft_ms,
                "duration_ms": int(duration_s * 1000),
            },
        )
        return time.monotonic()
