"""The edge's side of the generator: gRPC calls with deadlines and the current trace id, and
the one translation from gRPC status to protocol error codes."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from docgen.v1 import generator_pb2, generator_pb2_grpc, outline_pb2

from services.common.tracing import outgoing_metadata


@dataclass(frozen=True)
class ProtocolError:
    code: str
    message: str
    retryable: bool


def error_from_status(error: grpc.aio.AioRpcError) -> ProtocolError:
    status = error.code()
    details = error.details() or status.name
    if status == grpc.StatusCode.INVALID_ARGUMENT:
        return ProtocolError("invalid_outline", details, False)
    if status == grpc.StatusCode.NOT_FOUND:
        return ProtocolError("run_not_found", "no such run: unknown, expired, or not yours", False)
    if status == grpc.StatusCode.OUT_OF_RANGE:
        return ProtocolError("cursor_out_of_range", details, False)
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ProtocolError("too_many_runs", details, True)
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ProtocolError(
            "generator_unavailable", "the document generator is unreachable; retry shortly", True
        )
    return ProtocolError("internal", f"internal error ({status.name}); retry shortly", True)


class GeneratorClient:
    def __init__(
        self, channel: grpc.aio.Channel, *, unary_timeout_s: float, stream_timeout_s: float
    ) -> None:
        self._stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        self._unary_timeout_s = unary_timeout_s
        self._stream_timeout_s = stream_timeout_s

    def start_run(
        self,
        outline: outline_pb2.Outline,
        *,
        user_id: str,
        request_id: str,
    ) -> grpc.aio.UnaryStreamCall:
        return self._stub.StartRun(
            generator_pb2.StartRunRequest(outline=outline, user_id=user_id, request_id=request_id),
            timeout=self._stream_timeout_s,
            metadata=outgoing_metadata(),
            wait_for_ready=False,
        )

    def attach_run(self, run_id: str, *, user_id: str, after_seq: int) -> grpc.aio.UnaryStreamCall:
        return self._stub.AttachRun(
            generator_pb2.AttachRunRequest(run_id=run_id, user_id=user_id, after_seq=after_seq),
            timeout=self._stream_timeout_s,
            metadata=outgoing_metadata(),
        )

    async def cancel_run(self, run_id: str, *, user_id: str) -> bool:
        response = await self._stub.CancelRun(
            generator_pb2.CancelRunRequest(run_id=run_id, user_id=user_id),
            timeout=self._unary_timeout_s,
            metadata=outgoing_metadata(),
        )
        return response.already_ended
