"""gRPC binding of the summary service: proto in, summarizer (and refiner), proto out."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator

import grpc
import openai
from docgen.v1 import events_pb2, summary_pb2, summary_pb2_grpc

from services.common import metrics
from services.common.gc_tuning import tune_gc_after_startup
from services.common.grpc_server import (
    add_health_and_reflection,
    add_port,
    peer_interceptors,
    set_serving,
)
from services.common.llm_client import openai_client
from services.common.logs import configure_logging, set_log_context
from services.common.otel import configure_tracing, shutdown_tracing
from services.common.tracing import trace_id_from_metadata
from services.summary.extractive import ExtractiveSummarizer, SectionDigest, Summary
from services.summary.refiner import RefinementFailed, SummaryRefiner
from services.summary.settings import SummarySettings

log = logging.getLogger(__name__)

SERVICE_NAME = summary_pb2.DESCRIPTOR.services_by_name["SummaryService"].full_name


def summary_from_proto(message: summary_pb2.GlobalSummary) -> Summary:
    return Summary(
        sections=tuple(
            SectionDigest(section_id=d.section_id, title=d.title, sentences=tuple(d.sentences))
            for d in message.sections
        )
    )


def summary_to_proto(summary: Summary) -> summary_pb2.GlobalSummary:
    return summary_pb2.GlobalSummary(
        sections=[
            summary_pb2.SectionDigest(
                section_id=d.section_id, title=d.title, sentences=list(d.sentences)
            )
            for d in summary.sections
        ],
        text=summary.text,
    )


class SummaryServicer(summary_pb2_grpc.SummaryServiceServicer):
    def __init__(
        self,
        summarizer: ExtractiveSummarizer,
        *,
        max_section_chars: int,
        refiner: SummaryRefiner | None = None,
    ) -> None:
        self._summarizer = summarizer
        self._max_section_chars = max_section_chars
        self._refiner = refiner

    async def UpdateSummary(
        self, request: summary_pb2.UpdateSummaryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[summary_pb2.UpdateSummaryResponse]:
        if not request.section.section_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "section.section_id is required")
        # Each RPC runs in its own task: these fields are on this request's log lines only, and
        # the trace id goes on to the refinement's LLM request.
        set_log_context(
            trace_id=trace_id_from_metadata(context.invocation_metadata()),
            section_id=request.section.section_id,
        )
        started = time.perf_counter()
        # The extractive update is CPU-bound but takes a few milliseconds: run it inline
        # rather than pay a thread hop.
        updated = self._summarizer.update(
            summary_from_proto(request.previous),
            section_id=request.section.section_id,
            title=request.section.title,
            text=request.section.text[: self._max_section_chars],
            document_title=request.document_title,
            language=request.language or None,
        )
        fast = summary_to_proto(updated)
        _observe("extractive", started)
        yield summary_pb2.UpdateSummaryResponse(
            summary=fast, method=events_pb2.SUMMARY_METHOD_EXTRACTIVE
        )
        if self._refiner is None or not updated.text.strip():
            return
        started = time.perf_counter()
        # A caller that cancels (the next section ended first) cancels this await, which
        # closes the refinement's HTTP request.
        try:
            refined = await self._refiner.refine(
                document_title=request.document_title, summary_text=updated.text
            )
        except RefinementFailed as failure:
            # The fast summary stands: the stream just ends, the caller sees no error.
            log.info(
                "summary refinement dropped",
                extra={
                    "reason": failure.reason,
                    "detail": failure.detail,
                    "elapsed_ms": int((time.perf_counter() - started) * 1000),
                },
            )
            return
        _observe("llm", started)
        # The digests stay the extractive ones: the next fast update builds on them.
        yield summary_pb2.UpdateSummaryResponse(
            summary=summary_pb2.GlobalSummary(sections=fast.sections, text=refined),
            method=events_pb2.SUMMARY_METHOD_LLM,
        )


def _observe(method: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    metrics.SUMMARY_UPDATE_SECONDS.labels(method).observe(elapsed)
    log.info("summary updated", extra={"method": method, "elapsed_ms": round(elapsed * 1000, 1)})


class SummaryServer:
    def __init__(self, settings: SummarySettings, address: str | None = None) -> None:
        self.settings = settings
        self.server = grpc.aio.server(interceptors=peer_interceptors(settings.grpc_peer_auth))
        summarizer = ExtractiveSummarizer(
            budget_words=settings.budget_words, language=settings.language
        )
        self._llm: openai.AsyncOpenAI | None = None
        refiner = None
        if settings.mode == "llm":
            self._llm = openai_client(
                base_url=settings.llm_base_url,
                api_key=settings.llm_api_key,
                # One try: the deadline is short, and the fast summary already stands.
                max_retries=0,
                timeout=settings.llm_deadline_s,
            )
            refiner = SummaryRefiner(
                self._llm,
                model=settings.llm_model,
                budget_words=settings.budget_words,
                deadline_s=settings.llm_deadline_s,
            )
        summary_pb2_grpc.add_SummaryServiceServicer_to_server(
            SummaryServicer(
                summarizer, max_section_chars=settings.max_section_chars, refiner=refiner
            ),
            self.server,
        )
        self.health = add_health_and_reflection(self.server, [SERVICE_NAME])
        self.port = add_port(
            self.server, address or settings.addr, settings.grpc_tls, settings.grpc_peer_auth
        )
        if self.port == 0:
            raise OSError(f"cannot listen on {address or settings.addr}")

    async def start(self) -> None:
        await self.server.start()
        await set_serving(self.health, [SERVICE_NAME], True)

    async def stop(self) -> None:
        await set_serving(self.health, [SERVICE_NAME], False)
        # Fast updates take milliseconds; one second lets in-flight ones finish. Refinements
        # still running are cut: their callers keep the fast summary they already have.
        await self.server.stop(1.0)
        if self._llm is not None:
            await self._llm.close()


async def serve() -> None:
    configure_logging("summary")
    configure_tracing("summary")
    settings = SummarySettings.from_env()
    server = SummaryServer(settings)
    metrics.start_metrics_server(settings.metrics_port)
    await server.start()
    tune_gc_after_startup()
    log.info(
        "summary listening on %s (budget %d words, mode %s)",
        settings.addr,
        settings.budget_words,
        settings.mode,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("summary stopping")
    await server.stop()
    shutdown_tracing()
