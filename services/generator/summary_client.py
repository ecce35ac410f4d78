"""The generator's side of the summary service: a gRPC stream behind `SummaryUpdater`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from docgen.v1 import summary_pb2, summary_pb2_grpc

from services.common.tracing import outgoing_metadata
from services.generator.summary_step import SummaryUnavailable


class GrpcSummaryUpdater:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = summary_pb2_grpc.SummaryServiceStub(channel)

    async def update(
        self, request: summary_pb2.UpdateSummaryRequest, *, timeout_s: float
    ) -> AsyncIterator[summary_pb2.UpdateSummaryResponse]:
        call = self._stub.UpdateSummary(request, timeout=timeout_s, metadata=outgoing_metadata())
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise SummaryUnavailable(f"{error.code().name}: {error.details()}") from error
        finally:
            call.cancel()
