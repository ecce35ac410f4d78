"""The summary step of a run: after each section, the fast summary update the next prompt
needs, refinements applied in the background, and sections missed during an outage folded in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

from docgen.v1 import events_pb2, outline_pb2, summary_pb2

from services.common import metrics
from services.generator.runs.log import RunWriter
from services.generator.settings import GeneratorSettings

log = logging.getLogger(__name__)


class SummaryUnavailable(Exception):
    """The summary service could not be reached or failed."""


class SummaryUpdater(Protocol):
    """What the run needs from the summary service (gRPC in production)."""

    def update(
        self, request: summary_pb2.UpdateSummaryRequest, *, timeout_s: float
    ) -> AsyncIterator[summary_pb2.UpdateSummaryResponse]: ...


class SummaryStep:
    """The summary half of `RunExecution` (its base class): the run's summary state lives on
    the execution, declared here."""

    _log: RunWriter
    _outline: outline_pb2.Outline
    _summaries: SummaryUpdater
    _settings: GeneratorSettings
    _language: str
    _summary: summary_pb2.GlobalSummary
    _summary_through: int
    _summary_version: int
    _summary_reported: int
    _missed_sections: list[summary_pb2.FinishedSection]
    _refinement: asyncio.Task[None] | None

    async def _update_summary(self, index: int, text: str, ended_at: float) -> None:
        """Awaits the fast update (the next prompt needs it); later refinements of the same
        request are applied in the background while the next section is written."""
        section = self._outline.sections[index]
        if self._refinement is not None and not self._refinement.done():
            self._refinement.cancel()  # it is about an older section: too late to matter
        await self._fold_missed_sections()
        finished = summary_pb2.FinishedSection(
            section_id=section.id, title=section.title, text=text
        )
        try:
            first, updates = await self._fast_update(finished)
        except (SummaryUnavailable, TimeoutError, StopAsyncIteration) as error:
            log.warning(
                "summary unavailable", extra={"section_id": section.id, "error": repr(error)}
            )
            self._missed_sections.append(finished)
            self._summary_reported = max(self._summary_reported, index)
            self._append_error(
                "summary_unavailable",
                "the summary could not be updated after this section; "
                "the document goes on with the previous summary",
                retryable=True,
                section_id=section.id,
            )
            return
        self._apply_summary(first, index, ended_at)
        self._refinement = asyncio.create_task(self._apply_refinements(updates, index, ended_at))
        if self._settings.summary_prompt_wait_s > 0:
            # Opt-in: give a refinement a bounded chance to reach the next prompt. When the wait
            # ends first, the next section starts with the fast summary and the refinement goes
            # on in the background (shown when it comes).
            await asyncio.wait({self._refinement}, timeout=self._settings.summary_prompt_wait_s)

    async def _fast_update(
        self, section: summary_pb2.FinishedSection
    ) -> tuple[summary_pb2.UpdateSummaryResponse, AsyncIterator[summary_pb2.UpdateSummaryResponse]]:
        """The first (fast) update for `section` on top of the current summary, and the stream
        it came on, which may still bring a refinement."""
        request = summary_pb2.UpdateSummaryRequest(
            document_title=self._outline.title,
            previous=self._summary,
            section=section,
            language=self._language,
        )
        updates = self._summaries.update(
            request,
            timeout_s=self._settings.summary_deadline_s + self._settings.summary_refine_deadline_s,
        ).__aiter__()
        try:
            async with asyncio.timeout(self._settings.summary_deadline_s):
                return await updates.__anext__(), updates
        except BaseException:
            await _close(updates)
            raise

    async def _fold_missed_sections(self) -> None:
        """Sections whose summary update failed are folded in, oldest first, before the next
        one, so a summary-service outage leaves no section out of later summaries. No event:
        the next `summary_update` covers them. (Not carried over a Redis takeover.)"""
        while self._missed_sections:
            try:
                first, updates = await self._fast_update(self._missed_sections[0])
            except (SummaryUnavailable, TimeoutError, StopAsyncIteration):
                return  # still down: the current section's update will report it
            await _close(updates)
            self._summary = first.summary
            self._missed_sections.pop(0)

    async def _apply_refinements(
        self,
        updates: AsyncIterator[summary_pb2.UpdateSummaryResponse],
        index: int,
        ended_at: float,
    ) -> None:
        try:
            async with asyncio.timeout(self._settings.summary_refine_deadline_s):
                async for update in updates:
                    if self._summary_through > index:
                        return
                    self._apply_summary(update, index, ended_at)
        except (SummaryUnavailable, TimeoutError) as error:
            # The fast summary stands; a refinement is an optional improvement.
            log.info(
                "summary refinement skipped",
                extra={"section_id": self._outline.sections[index].id, "error": repr(error)},
            )
        finally:
            await _close(updates)

    def _apply_summary(
        self, update: summary_pb2.UpdateSummaryResponse, index: int, ended_at: float
    ) -> None:
        self._summary = update.summary
        self._summary_through = index
        self._summary_reported = max(self._summary_reported, index)
        self._summary_version += 1
        latency_s = time.monotonic() - ended_at
        # Stored with the event below, so a generator taking the run over prompts with it.
        self._log.record_state(
            summary=update.summary.SerializeToString(),
            summary_through=index,
            summary_version=self._summary_version,
        )
        self._log.append(
            summary_update=events_pb2.SummaryUpdate(
                version=self._summary_version,
                through_section_id=self._outline.sections[index].id,
                summary=update.summary.text,
                method=update.method,
                latency_ms=int(latency_s * 1000),
            )
        )
        method = (
            events_pb2.SummaryMethod.Name(update.method).removeprefix("SUMMARY_METHOD_").lower()
        )  # type: ignore[arg-type]
        metrics.SUMMARY_LATENCY_SECONDS.labels(method).observe(latency_s)
        log.info(
            "summary updated",
            extra={
                "section_id": self._outline.sections[index].id,
                "version": self._summary_version,
                "method": method,
                "latency_ms": int(latency_s * 1000),
            },
        )

    def _append_error(
        self, code: str, message: str, *, retryable: bool, section_id: str = ""
    ) -> None:
        self._log.append(
            error=events_pb2.RunError(
                code=code, message=message, retryable=retryable, section_id=section_id
            )
        )
        metrics.RUN_ERRORS.labels(code).inc()


async def _close(iterator: AsyncIterator[object]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
