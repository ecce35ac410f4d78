"""gRPC binding of the summary service: proto in, summarizer, proto out."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

import grpc
from docgen.v1 import events_pb2, summary_pb2, summary_pb2_grpc

from services.common.grpc_server import add_health_and_reflection, set_serving
from services.common.logs import configure_logging
from services.summary.extractive import ExtractiveSummarizer, SectionDigest, Summary
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
            summary_pb2.SectionDigest(section_id=d.section_id, title=d.title, sentences=list(d.sentences))
            for d in summary.sections
        ],
        text=summary.text,
    )


class SummaryServicer(summary_pb2_grpc.SummaryServiceServicer):
    def __init__(self, summarizer: ExtractiveSummarizer, *, max_section_chars: int) -> None:
        self._summarizer = summarizer
        self._max_section_chars = max_section_chars

    async def UpdateSummary(
        self, request: summary_pb2.UpdateSummaryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[summary_pb2.UpdateSummaryResponse]:
        if not request.section.section_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "section.section_id is required")
        # The extractive update is CPU-bound but takes a few milliseconds: run it inline
        # rather than pay a thread hop.
        updated = self._summarizer.update(
            summary_from_proto(request.previous),
            section_id=request.section.section_id,
            title=request.section.title,
            text=request.section.text[: self._max_section_chars],
            document_title=request.document_title,
        )
        yield summary_pb2.UpdateSummaryResponse(
            summary=summary_to_proto(updated), method=events_pb2.SUMMARY_METHOD_EXTRACTIVE
        )


class SummaryServer:
    def __init__(self, settings: SummarySettings, address: str | None = None) -> None:
        self.settings = settings
        self.server = grpc.aio.server()
        summarizer = ExtractiveSummarizer(budget_words=settings.budget_words, language=settings.language)
        summary_pb2_grpc.add_SummaryServiceServicer_to_server(SummaryServicer(summarizer, max_section_chars=settings.max_section_chars), self.server)
        self.health = add_health_and_reflection(self.server, [SERVICE_NAME])
        self.port = self.server.add_insecure_port(address or settings.addr)
        if self.port == 0:
            raise OSError(f"cannot listen on {address or settings.addr}")

    async def start(self) -> None:
        await self.server.start()
        await set_serving(self.health, [SERVICE_NAME], True)

    async def stop(self) -> None:
        await set_serving(self.health, [SERVICE_NAME], False)
        # Updates take milliseconds; one second lets in-flight ones finish.
        await self.server.stop(1.0)


async def serve() -> None:
    configure_logging("summary")
    settings = SummarySettings.from_env()
    server = SummaryServer(settings)
    await server.start()
    log.info("summary listening on %s (budget %d words)", settings.addr, settings.budget_words)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("summary stopping")
    await server.stop()
