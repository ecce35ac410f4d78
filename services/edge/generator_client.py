"""The edge's side of the generator (one generator channel; `generator_pool.py` spreads runs
over several, `event_stream.py` multiplexes their events). Calls carry
deadlines and the current trace id; streams yield docgen's run events (`RunEvent`), through
the channel's event stream when there is one (`event_stream.py`); every failure is raised as
one `GeneratorError` (`generator_errors.py`, re-exported here) whose code, message and
retryability are the protocol's error frame.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol, TypeAlias

import grpc
from docgen.v1 import document_pb2, events_pb2, generator_pb2, generator_pb2_grpc, outline_pb2

from services.common.tracing import outgoing_metadata
from services.edge.event_stream import EventStreams, events, muxed_events
from services.edge.generator_errors import (
    ERROR_CODE_METADATA,
    RUN_NOT_ENDED,
    RUN_STATUS_METADATA,
    CursorOutOfRange,
    GeneratorError,
    GeneratorInternal,
    GeneratorUnavailable,
    InvalidOutline,
    PlanForbidden,
    PlannerNotConfigured,
    PlannerUnavailable,
    PlanNotFound,
    RunNotEnded,
    RunNotFound,
    TooManyRuns,
    error_from_status,
)

__all__ = [
    "ERROR_CODE_METADATA",
    "RUN_NOT_ENDED",
    "RUN_STATUS_METADATA",
    "CursorOutOfRange",
    "Generator",
    "GeneratorClient",
    "GeneratorError",
    "GeneratorInternal",
    "GeneratorUnavailable",
    "InvalidOutline",
    "PlanForbidden",
    "PlanNotFound",
    "PlannerNotConfigured",
    "PlannerUnavailable",
    "RunEvent",
    "RunInfo",
    "RunNotEnded",
    "RunNotFound",
    "RunStatus",
    "TooManyRuns",
    "error_from_status",
]

RunEvent = events_pb2.RunEvent
RunInfo = events_pb2.RunInfo
RunStatus: TypeAlias = events_pb2.RunStatus.ValueType


class Generator(Protocol):
    """What a socket session needs from the generator (`GeneratorClient`, or a fake in
    tests). Streams end after `run_end`; close them (`contextlib.aclosing`) to hang up early."""

    def start(
        self,
        outline: outline_pb2.Outline,
        *,
        user_id: str,
        request_id: str,
        chunk_interval_ms: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        """Starts a run and yields its events from `seq` 1 (`chunk_interval_ms`: at most one
        `section_chunk` per that many ms per section; 0: one per LLM delta)."""
        ...

    def follow(
        self, run_id: str, *, user_id: str, after_seq: int
    ) -> AsyncGenerator[RunInfo | RunEvent, None]:
        """Yields the run's `RunInfo` (its status and last `seq` now), then its events after
        `after_seq`, stored then live."""
        ...

    async def cancel(self, run_id: str, *, user_id: str) -> RunStatus:
        """Cancels the run; returns its status when the cancel arrived (running, or how it
        had already ended)."""
        ...

    async def list_runs(self, *, user_id: str) -> list[RunInfo]:
        """The user's runs that can still be resumed."""
        ...

    def start_plan(
        self,
        document_id: str,
        *,
        user_id: str,
        request_id: str,
        token: str,
        chunk_interval_ms: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        """Starts a run from the planner's outline of `document_id`, read with the user's
        `token` (docs/planner.md); yields its events from `seq` 1."""
        ...

    async def get_document(self, run_id: str, *, user_id: str) -> document_pb2.Document:
        """The finished document of an ended run; `RunNotEnded` while it is written."""
        ...


class GeneratorClient:
    """`Generator` over a gRPC channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        unary_timeout_s: float,
        stream_timeout_s: float,
        event_stream: bool = False,
    ) -> None:
        self._stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        self._unary_timeout_s = unary_timeout_s
        self._stream_timeout_s = stream_timeout_s
        # One multiplexed stream of every run's events on this channel (docs/grpc.md).
        self._event_streams = (
            EventStreams(self._stub, open_timeout_s=unary_timeout_s) if event_stream else None
        )

    def close(self) -> None:
        """Hangs up the event stream (before the channel closes)."""
        if self._event_streams is not None:
            self._event_streams.close()

    def start(
        self,
        outline: outline_pb2.Outline,
        *,
        user_id: str,
        request_id: str,
        chunk_interval_ms: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        request = generator_pb2.StartRunRequest(
            outline=outline,
            user_id=user_id,
            request_id=request_id,
            chunk_interval_ms=chunk_interval_ms,
            batch=True,
        )
        return self._run_events(self._stub.StartRun, request, outgoing_metadata(), None)

    def start_plan(
        self,
        document_id: str,
        *,
        user_id: str,
        request_id: str,
        token: str,
        chunk_interval_ms: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        # The user's own token goes along, for the planner to decide (docs/grpc.md); gRPC
        # metadata is never logged.
        metadata = (*outgoing_metadata(), ("authorization", f"Bearer {token}"))
        request = generator_pb2.StartRunRequest(
            plan=generator_pb2.PlanReference(document_id=document_id),
            user_id=user_id,
            request_id=request_id,
            chunk_interval_ms=chunk_interval_ms,
            batch=True,
        )
        return self._run_events(self._stub.StartRun, request, metadata, None)

    def _run_events(
        self, method: Any, request: Any, metadata: Any, after_seq: int | None
    ) -> AsyncGenerator[Any, None]:
        """The items of a StartRun (`after_seq` None) or AttachRun call of `request`: through
        the channel's event stream when there is one (`DOCGEN_EDGE_EVENT_STREAM`)."""

        def call_with(stream_id: str, follow_key: str) -> grpc.aio.UnaryStreamCall:
            named = request
            if stream_id:
                named = type(request)(event_stream_id=stream_id, follow_key=follow_key)
                named.MergeFrom(request)
            return method(
                named, timeout=self._stream_timeout_s, metadata=metadata, wait_for_ready=False
            )

        if self._event_streams is None:
            return events(call_with("", ""))
        return muxed_events(self._event_streams, call_with, after_seq)

    async def get_document(self, run_id: str, *, user_id: str) -> document_pb2.Document:
        try:
            response = await self._stub.GetDocument(
                generator_pb2.GetDocumentRequest(run_id=run_id, user_id=user_id),
                timeout=self._unary_timeout_s,
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_status(error) from error
        return response.document

    def follow(
        self, run_id: str, *, user_id: str, after_seq: int
    ) -> AsyncGenerator[RunInfo | RunEvent, None]:
        request = generator_pb2.AttachRunRequest(
            run_id=run_id, user_id=user_id, after_seq=after_seq, batch=True
        )
        return self._run_events(self._stub.AttachRun, request, outgoing_metadata(), after_seq)

    async def cancel(self, run_id: str, *, user_id: str) -> RunStatus:
        try:
            response = await self._stub.CancelRun(
                generator_pb2.CancelRunRequest(run_id=run_id, user_id=user_id),
                timeout=self._unary_timeout_s,
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_status(error) from error
        return response.status

    async def list_runs(self, *, user_id: str) -> list[RunInfo]:
        try:
            response = await self._stub.ListRuns(
                generator_pb2.ListRunsRequest(user_id=user_id),
                timeout=self._unary_timeout_s,
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_status(error) from error
        return list(response.runs)

    async def limits(self, *, timeout_s: float) -> dict[str, int]:
        """The generator's limits a client can hit, for the `session` frame."""
        try:
            response = await self._stub.GetLimits(
                generator_pb2.GetLimitsRequest(), timeout=timeout_s, metadata=outgoing_metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_status(error) from error
        return {
            "max_runs_per_user": response.max_runs_per_user,
            "max_outline_tokens": response.max_outline_tokens,
            "max_sections": response.max_sections,
            "max_target_tokens": response.max_target_tokens,
        }
