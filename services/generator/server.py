"""gRPC binding of the generator: translates requests and statuses, holds no logic."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
import openai
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc

from services.common import language, metrics
from services.common.gc_tuning import tune_gc_after_startup
from services.common.grpc_client import channel
from services.common.grpc_server import (
    add_health_and_reflection,
    add_port,
    peer_interceptors,
    set_serving,
)
from services.common.llm_client import openai_client
from services.common.logs import configure_logging
from services.common.otel import configure_tracing, shutdown_tracing
from services.common.tracing import trace_id_from_metadata
from services.generator.errors import (
    CursorOutOfRange,
    GeneratorError,
    InvalidRequest,
    RunNotFound,
    grpc_status_name,
)
from services.generator.event_batches import follow_batches
from services.generator.event_stream import Deliver, EventStreams
from services.generator.outline import MAX_SECTIONS, MAX_TARGET_TOKENS
from services.generator.planner import PlannerClient, PlannerRetry
from services.generator.plans import document_of, error_trailers, outline_of
from services.generator.run_directory import DirectoryEntry, RunDirectory, describe, now_unix_ms
from services.generator.runs.registry import Run, RunRegistry
from services.generator.runs.store import open_run_store
from services.generator.section_writer import RetryPolicy, SectionWriter
from services.generator.settings import GeneratorSettings
from services.generator.summary_client import GrpcSummaryUpdater

log = logging.getLogger(__name__)

SERVICE_NAME = generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name


async def abort(context: grpc.aio.ServicerContext, error: GeneratorError) -> NoReturn:
    """Ends the call with `error`'s status (the one table: `errors.GRPC_STATUS`)."""
    await context.abort(grpc.StatusCode[grpc_status_name(error)], str(error), error_trailers(error))
    raise AssertionError("unreachable: abort raises")


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(
        self,
        registry: RunRegistry,
        limits: generator_pb2.GetLimitsResponse | None = None,
        planner: PlannerClient | None = None,
        event_streams: EventStreams | None = None,
    ) -> None:
        self._registry = registry
        self._planner = planner or PlannerClient(None, timeout_s=1.0)
        self._limits = limits or generator_pb2.GetLimitsResponse()
        self._directory = RunDirectory()
        # Without this, a user who never lists their runs again kept up to 256 entries for
        # the life of the process (a new user per run grew it without bound).
        registry.on_expired(self._directory.forget)
        # `is None`, not `or`: an EventStreams with no stream open yet is falsy (`__len__`), and
        # `or` silently replaced the configured one (its pacing) with a default.
        self.event_streams = event_streams if event_streams is not None else EventStreams()

    async def StartRun(
        self, request: generator_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generator_pb2.StartRunResponse]:
        if not request.user_id:
            await abort(context, InvalidRequest("user_id is required"))
        # Idempotent by request id: a caller that lost the stream before `RunStarted` sends
        # the same request again and gets the same run, replayed from seq 1.
        async with self._directory.starting(request.user_id, request.request_id):
            try:
                stream = self.event_streams.find(request.event_stream_id, request.follow_key)
                run = await self._started_before(request.user_id, request.request_id)
                if run is None:
                    # With `plan`: read from the planner with the caller's token (metadata).
                    outline, plan_source = await outline_of(
                        request, planner=self._planner, metadata=context.invocation_metadata()
                    )
                    run = await self._registry.start(
                        outline,
                        user_id=request.user_id,
                        request_id=request.request_id,
                        trace_id=trace_id_from_metadata(context.invocation_metadata()),
                        plan_source=plan_source,
                        chunk_interval_ms=request.chunk_interval_ms,
                    )
                    self._directory.record(
                        request.user_id,
                        DirectoryEntry(
                            run_id=run.run_id,
                            request_id=request.request_id,
                            document_id=outline.document_id,
                            started_at_unix_ms=now_unix_ms(),
                        ),
                    )
            except GeneratorError as error:
                await abort(context, error)
        if stream is not None:
            await self._push(run, 0, context, stream)
            return
        async for events in self._follow(run, 0, context, batch=request.batch):
            if len(events) == 1:
                yield generator_pb2.StartRunResponse(event=events[0])
            else:
                yield generator_pb2.StartRunResponse(
                    batch=generator_pb2.RunEventBatch(events=events)
                )

    async def AttachRun(
        self, request: generator_pb2.AttachRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generator_pb2.AttachRunResponse]:
        try:
            stream = self.event_streams.find(request.event_stream_id, request.follow_key)
            run = await self._registry.find(request.run_id, user_id=request.user_id)
            # First what the run is now, so "already ended" is an answer, not an empty stream.
            info = await describe(run, self._entry(request.user_id, run.run_id))
        except GeneratorError as error:
            await abort(context, error)
        if request.after_seq > info.last_seq:
            await abort(
                context, CursorOutOfRange(after_seq=request.after_seq, last_seq=info.last_seq)
            )
        yield generator_pb2.AttachRunResponse(run=info)
        if info.status != events_pb2.RUN_STATUS_RUNNING and request.after_seq >= info.last_seq:
            return  # nothing after the end (a follower of the shared log would wait forever)
        if stream is not None:
            await self._push(run, request.after_seq, context, stream)
            return
        async for events in self._follow(run, request.after_seq, context, batch=request.batch):
            if len(events) == 1:
                yield generator_pb2.AttachRunResponse(event=events[0])
            else:
                yield generator_pb2.AttachRunResponse(
                    batch=generator_pb2.RunEventBatch(events=events)
                )

    async def CancelRun(
        self, request: generator_pb2.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.CancelRunResponse:
        try:
            run = await self._registry.find(request.run_id, user_id=request.user_id)
            info = await describe(run, self._entry(request.user_id, run.run_id))
            already_ended = await self._registry.cancel(request.run_id, user_id=request.user_id)
        except GeneratorError as error:
            await abort(context, error)
        return generator_pb2.CancelRunResponse(already_ended=already_ended, status=info.status)

    async def GetDocument(
        self, request: generator_pb2.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.GetDocumentResponse:
        try:
            run = await self._registry.find(request.run_id, user_id=request.user_id)
            document = await document_of(run.log, ended=run.ended)
        except GeneratorError as error:
            await abort(context, error)
        return generator_pb2.GetDocumentResponse(document=document)

    async def ListRuns(
        self, request: generator_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.ListRunsResponse:
        if not request.user_id:
            await abort(context, InvalidRequest("user_id is required"))
        runs = []
        try:
            for entry in self._directory.entries(request.user_id):
                try:
                    run = await self._registry.find(entry.run_id, user_id=request.user_id)
                except RunNotFound:
                    self._directory.forget(request.user_id, entry.run_id)  # expired
                    continue
                runs.append(await describe(run, entry))
        except GeneratorError as error:
            await abort(context, error)
        return generator_pb2.ListRunsResponse(runs=runs)

    async def OpenEventStream(
        self, request: generator_pb2.OpenEventStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generator_pb2.EventStreamMessage]:
        async for message in self.event_streams.serve():
            yield message

    async def GetLimits(
        self, request: generator_pb2.GetLimitsRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.GetLimitsResponse:
        return self._limits

    def _entry(self, user_id: str, run_id: str) -> DirectoryEntry | None:
        return next((e for e in self._directory.entries(user_id) if e.run_id == run_id), None)

    async def _started_before(self, user_id: str, request_id: str) -> Run | None:
        """The run this user's earlier `StartRun` with `request_id` started, if it exists."""
        entry = self._directory.by_request(user_id, request_id) if request_id else None
        if entry is None:
            return None
        try:
            return await self._registry.find(entry.run_id, user_id=user_id)
        except RunNotFound:
            self._directory.forget(user_id, entry.run_id)
            return None

    async def _push(
        self, run: Run, after_seq: int, context: grpc.aio.ServicerContext, deliver: Deliver
    ) -> None:
        """Hands the run's events after `after_seq` to its event stream (this call has none)."""
        try:
            await deliver(self._follow(run, after_seq, None, batch=True))
        except GeneratorError as error:
            await abort(context, error)

    async def _follow(
        self, run: Run, after_seq: int, context: grpc.aio.ServicerContext | None, *, batch: bool
    ) -> AsyncIterator[list[events_pb2.RunEvent]]:
        """The run's events after `after_seq`, one per list, or (`batch`: the caller reads
        `RunEventBatch`) as many per list as are ready together."""
        async with self._registry.subscription(run):
            try:
                if batch:
                    async for events in follow_batches(run.log, after_seq):
                        yield events
                else:
                    async for event in run.log.follow(after_seq):
                        yield [event]
            except GeneratorError as error:
                if context is None:
                    raise
                await abort(context, error)


class GeneratorServer:
    """The generator process's parts, created together and stopped in order."""

    def __init__(self, settings: GeneratorSettings, address: str | None = None) -> None:
        self.settings = settings
        self._summary_channel = channel(
            settings.summary_addr, settings.grpc_tls, settings.grpc_peer_auth
        )
        self._llm = openai_client(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            max_retries=0,  # SectionWriter retries, counted and bounded
            timeout=openai.Timeout(
                settings.llm_request_timeout_s, read=settings.llm_stall_timeout_s
            ),
        )
        writer = SectionWriter(
            self._llm,
            model=settings.llm_model,
            temperature=settings.llm_temperature,
            stall_timeout_s=settings.llm_stall_timeout_s,
            retry=RetryPolicy(max_retries=settings.llm_connect_retries),
            on_retry=lambda _error: metrics.LLM_RETRIES.labels("request").inc(),
            extra_body=settings.llm_extra_body,
        )
        self.registry = RunRegistry(
            writer=writer,
            summaries=GrpcSummaryUpdater(self._summary_channel),
            settings=settings,
            store=open_run_store(settings),
        )
        # Each client connection is told to move on (GOAWAY) after 5 minutes; its streams
        # finish undisturbed, and new calls reconnect, re-resolving `dns:///` names: edges
        # spread their calls over generators added since (round-robin only balances over
        # the addresses it knows).
        self.server = grpc.aio.server(
            options=[("grpc.max_connection_age_ms", 300_000)],
            interceptors=peer_interceptors(settings.grpc_peer_auth),
        )
        limits = generator_pb2.GetLimitsResponse(
            max_runs_per_user=settings.max_active_runs_per_user,
            max_outline_tokens=settings.max_outline_tokens,
            max_sections=MAX_SECTIONS,
            max_target_tokens=MAX_TARGET_TOKENS,
        )
        self._planner = PlannerClient(
            settings.planner_url,
            timeout_s=settings.planner_timeout_s,
            retry=PlannerRetry(max_retries=settings.planner_retries),
        )
        streams = EventStreams(interval_s=settings.event_stream_interval_ms / 1000)
        self.servicer = GeneratorServicer(self.registry, limits, self._planner, streams)
        generator_pb2_grpc.add_GeneratorServiceServicer_to_server(self.servicer, self.server)
        self.health = add_health_and_reflection(self.server, [SERVICE_NAME])
        self.port = add_port(
            self.server, address or settings.addr, settings.grpc_tls, settings.grpc_peer_auth
        )
        if self.port == 0:
            raise OSError(f"cannot listen on {address or settings.addr}")

    async def start(self) -> None:
        await self.registry.open()
        await self.server.start()
        await set_serving(self.health, [SERVICE_NAME], True)

    async def stop(self) -> None:
        # Health first, so balancers stop sending new runs; then end every run (each appends
        # its run_end, which followers still receive within the grace); then the transport.
        await set_serving(self.health, [SERVICE_NAME], False)
        if self.settings.shutdown_drain_s:
            await asyncio.sleep(self.settings.shutdown_drain_s)
        # With a shared run log, runs are handed over instead (another generator takes each
        # over within a lease), and followers here keep reading it until the grace ends.
        await self.registry.close()
        self.servicer.event_streams.drain()  # each ends once its runs' calls have ended
        await self.server.stop(self.settings.shutdown_grace_s)
        await self.registry.disconnect()
        await self._summary_channel.close()
        await self._llm.close()
        await self._planner.close()


async def serve() -> None:
    configure_logging("generator")
    configure_tracing("generator")
    settings = GeneratorSettings.from_env()
    # Load the language detector (a few seconds) before taking requests, not in the first run
    # of an outline without `language`.
    await asyncio.to_thread(language.warm_up)
    server = GeneratorServer(settings)
    await server.start()
    metrics.start_metrics_server(settings.metrics_port)
    tune_gc_after_startup()
    log.info(
        "generator listening on %s (LLM %s, model %s)",
        settings.addr,
        settings.llm_base_url,
        settings.llm_model,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("generator stopping")
    await server.stop()
    shutdown_tracing()
