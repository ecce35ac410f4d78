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
    └── GeneratorInternal          any other status: a bug or a surprise (retryable)

`error_from_status` is the one translation from gRPC status to these.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

import grpc
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc, outline_pb2

from services.common.tracing import outgoing_metadata

RunEvent = events_pb2.RunEvent


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


def error_from_status(error: grpc.aio.AioRpcError) -> GeneratorError:
    """The protocol error of a failed gRPC call."""
    status = error.code()
    details = error.details() or status.name
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
        self, outline: outline_pb2.Outline, *, user_id: str, request_id: str
    ) -> AsyncGenerator[RunEvent, None]:
        """Starts a run and yields its events from `seq` 1."""
        ...

    def follow(
        self, run_id: str, *, user_id: str, after_seq: int
    ) -> AsyncGenerator[RunEvent, None]:
        """Yields the run's events after `after_seq`, stored then live."""
        ...

    async def cancel(self, run_id: str, *, user_id: str) -> bool:
        """Cancels the run; True when it had already ended."""
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
        self, outline: outline_pb2.Outline, *, user_id: str, request_id: str
    ) -> AsyncGenerator[RunEvent, None]:
        return _events(
            self._stub.StartRun(
                generator_pb2.StartRunRequest(
                    outline=outline, user_id=user_id, request_id=request_id
                ),
                timeout=self._stream_timeout_s,
                metadata=outgoing_metadata(),
                wait_for_ready=False,
            )
        )

    def follow(
        self, run_id: str, *, user_id: str, after_seq: int
    ) -> AsyncGenerator[RunEvent, None]:
        return _events(
            self._stub.AttachRun(
                generator_pb2.AttachRunRequest(run_id=run_id, user_id=user_id, after_seq=after_seq),
                timeout=self._stream_timeout_s,
                metadata=outgoing_metadata(),
            )
        )

    async def cancel(self, run_id: str, *, user_id: str) -> bool:
        try:
            response = await self._stub.CancelRun(
                generator_pb2.CancelRunRequest(run_id=run_id, user_id=user_id),
                timeout=self._unary_timeout_s,
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_status(error) from error
        return response.already_ended


async def _events(call: grpc.aio.UnaryStreamCall) -> AsyncGenerator[RunEvent, None]:
    """The events of a StartRun/AttachRun stream; the call is cancelled however the caller
    stops reading, so the generator sees the follower leave."""
    try:
        async for response in call:
            # Only events: other items of a stream (AttachRun's opening `RunInfo`) are not
            # part of the run's log.
            if response.HasField("event"):
                yield response.event
    except grpc.aio.AioRpcError as error:
        raise error_from_status(error) from error
    finally:
        call.cancel()
