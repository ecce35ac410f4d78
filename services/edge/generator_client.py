"""The edge's side of the generator: the only edge module that speaks gRPC. Calls carry
deadlines and the current trace id; streams yield docgen's run events (`RunEvent`); every
failure is raised as one `GeneratorError` whose code, message and retryability are the
protocol's error frame.

    GeneratorError                 a call to the generator failed; `.code` is the frame's code
    ├── GeneratorUnavailable       unreachable or too slow: re-attaching may work (retryable)
    ├── InvalidOutline             the generator refused the outline
    ├── RunNotFound                unknown, expired, or another user's run
    ├── CursorOutOfRange           `after_seq` is past the run's last event
    ├── TooManyRuns                this user's (or this generator's) run limit (retryable)
    ├── PlanNotFound               the planner has no such document (docs/planner.md)
    ├── PlanForbidden              the planner refused this user's token
    ├── PlannerUnavailable         the planner is down, slow or overloaded (retryable)
    ├── PlannerNotConfigured       the generator has no planner
    ├── RunNotEnded                the run's document is still being written (`.status`)
    └── GeneratorInternal          any other status: a bug or a surprise (retryable)

`error_from_status` is the one translation from gRPC status to these; the planner's errors
travel as their protocol code in the `docgen-error-code` trailing metadata.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol, TypeAlias

import grpc
from docgen.v1 import document_pb2, events_pb2, generator_pb2, generator_pb2_grpc, outline_pb2

from services.common.tracing import outgoing_metadata

RunEvent = events_pb2.RunEvent
RunInfo = events_pb2.RunInfo
RunStatus: TypeAlias = events_pb2.RunStatus.ValueType


class GeneratorError(Exception):
    """A call to the generator failed. `code`, `message` and `retryable` are what the client
    is told in its error frame (docs/protocol.md)."""

    code = "internal"
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GeneratorUnavailable(GeneratorError):
    """The generator is unreachable or did not answer in time: a follower re-attaches."""

    code = "generator_unavailable"
    retryable = True


class InvalidOutline(GeneratorError):
    code = "invalid_outline"
    retryable = False


class RunNotFound(GeneratorError):
    code = "run_not_found"
    retryable = False


class CursorOutOfRange(GeneratorError):
    code = "cursor_out_of_range"
    retryable = False


class TooManyRuns(GeneratorError):
    code = "too_many_runs"
    retryable = True


class GeneratorInternal(GeneratorError):
    code = "internal"
    retryable = True


class PlanNotFound(GeneratorError):
    code = "plan_not_found"
    retryable = False


class PlanForbidden(GeneratorError):
    code = "plan_forbidden"
    retryable = False


class PlannerUnavailable(GeneratorError):
    code = "planner_unavailable"
    retryable = True


class PlannerNotConfigured(GeneratorError):
    code = "planner_not_configured"
    retryable = False


# The code of an HTTP answer (`GET /v1/runs/{run_id}/document`, 409), never of a frame.
RUN_NOT_ENDED = "run_not_ended"


class RunNotEnded(GeneratorError):
    """Only `get_document` raises it: the run's document is still being written."""

    code = RUN_NOT_ENDED
    retryable = True

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


# Set by the generator on errors whose gRPC status alone is ambiguous (NOT_FOUND: plan or run).
ERROR_CODE_METADATA = "docgen-error-code"
RUN_STATUS_METADATA = "docgen-run-status"
_PLANNER_ERRORS: dict[str, type[GeneratorError]] = {
    cls.code: cls for cls in (PlanNotFound, PlanForbidden, PlannerUnavailable, PlannerNotConfigured)
}


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for name, value in error.trailing_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def error_from_status(error: grpc.aio.AioRpcError) -> GeneratorError:
    """The protocol error of a failed gRPC call."""
    status = error.code()
    details = error.details() or status.name
    planner_error = _PLANNER_ERRORS.get(_trailer(error, ERROR_CODE_METADATA) or "")
    if planner_error is not None:
        return planner_error(details)
    if status == grpc.StatusCode.FAILED_PRECONDITION and _trailer(error, RUN_STATUS_METADATA):
        run_status = _trailer(error, RUN_STATUS_METADATA) or "running"
        return RunNotEnded(details, status=run_status)
    if status == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidOutline(details)
    if status == grpc.StatusCode.NOT_FOUND:
        # Deliberately the same words for unknown, expired and foreign runs.
        return RunNotFound("no such run: unknown, expired, or not yours")
    if status == grpc.StatusCode.OUT_OF_RANGE:
        return CursorOutOfRange(details)
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return TooManyRuns(details)
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return GeneratorUnavailable("the document generator is unreachable; retry shortly")
    return GeneratorInternal(f"internal error ({status.name}); retry shortly")


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
        self, channel: grpc.aio.Channel, *, unary_timeout_s: float, stream_timeout_s: float
    ) -> None:
        self._stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        self._unary_timeout_s = unary_timeout_s
        self._stream_timeout_s = stream_timeout_s

    def start(
        self,
        outline: outline_pb2.Outline,
        *,
        user_id: str,
        request_id: str,
        chunk_interval_ms: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        return _events(
            self._stub.StartRun(
                generator_pb2.StartRunRequest(
                    outline=outline,
                    user_id=user_id,
                    request_id=request_id,
                    chunk_interval_ms=chunk_interval_ms,
                    batch=True,
                ),
                timeout=self._stream_timeout_s,
                metadata=outgoing_metadata(),
                wait_for_ready=False,
            )
        )

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
        return _events(
            self._stub.StartRun(
                generator_pb2.StartRunRequest(
                    plan=generator_pb2.PlanReference(document_id=document_id),
                    user_id=user_id,
                    request_id=request_id,
                    chunk_interval_ms=chunk_interval_ms,
                    batch=True,
                ),
                timeout=self._stream_timeout_s,
                metadata=metadata,
                wait_for_ready=False,
            )
        )

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
        return _events(
            self._stub.AttachRun(
                generator_pb2.AttachRunRequest(
                    run_id=run_id, user_id=user_id, after_seq=after_seq, batch=True
                ),
                timeout=self._stream_timeout_s,
                metadata=outgoing_metadata(),
            )
        )

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


async def _events(call: grpc.aio.UnaryStreamCall) -> AsyncGenerator[Any, None]:
    """The items of a StartRun/AttachRun stream: events, and AttachRun's opening `RunInfo`;
    the call is cancelled however the caller stops reading, so the generator sees the
    follower leave."""
    try:
        async for response in call:
            if response.HasField("event"):
                yield response.event
            elif response.HasField("batch"):  # several events ready together (we ask for it)
                for event in response.batch.events:
                    yield event
            elif isinstance(response, generator_pb2.AttachRunResponse) and response.HasField("run"):
                yield response.run
    except grpc.aio.AioRpcError as error:
        raise error_from_status(error) from error
    finally:
        call.cancel()
