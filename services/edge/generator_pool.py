"""Several generators named one by one (`DOCGEN_GENERATOR_ADDR=a:1,b:2`): one channel, and so
one event stream, per generator.

Behind a single round-robin channel the edge's event stream reached only one generator: a
call that landed on another was refused (`event_stream_not_found`) and went again with a
gRPC stream of its own (docs/performance.md, "Several cores"). Here each generator has its
own `GeneratorClient`: runs start round robin over the generators whose channel is ready,
as gRPC's `round_robin` policy picks ready subchannels; a run's later calls (follow, cancel,
document) go to the generator that started it when this edge started it, else round robin
(with the shared Redis run log any generator serves any run). `dns:///` names keep one
channel: their addresses are the resolver's, not ours. `unready` is `/readyz`'s check over
those channels."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import OrderedDict
from collections.abc import AsyncGenerator

import grpc
from docgen.v1 import document_pb2, outline_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.edge.generator_client import GeneratorClient, RunEvent, RunInfo, RunStatus

MAX_REMEMBERED_RUNS = 20_000
"""Runs whose generator this edge remembers (the oldest are forgotten first)."""


class GeneratorPool:
    """`Generator` over one `GeneratorClient` per generator; `channels[i]` is `clients[i]`'s."""

    def __init__(self, clients: list[GeneratorClient], channels: list[grpc.aio.Channel]) -> None:
        self._clients = clients
        self._channels = channels
        self._turn = itertools.count()
        self._homes: OrderedDict[str, GeneratorClient] = OrderedDict()

    def _pick(self) -> GeneratorClient:
        """The next generator whose channel is ready (the next one at all if none is)."""
        first = next(self._turn)
        count = len(self._clients)
        for step in range(count):
            index = (first + step) % count
            state = self._channels[index].get_state(try_to_connect=True)
            if state == grpc.ChannelConnectivity.READY:
                return self._clients[index]
        return self._clients[first % count]

    def _home(self, run_id: str) -> GeneratorClient:
        return self._homes.get(run_id) or self._pick()

    async def _remembered(
        self, client: GeneratorClient, events: AsyncGenerator[RunEvent, None]
    ) -> AsyncGenerator[RunEvent, None]:
        """`events`, noting which generator holds their run once its id is known."""
        async with contextlib.aclosing(events):
            async for event in events:
                if event.run_id not in self._homes:
                    self._homes[event.run_id] = client
                    if len(self._homes) > MAX_REMEMBERED_RUNS:
                        self._homes.popitem(last=False)
                yield event

    def start(
        self,
        outline: outline_pb2.Outline,
        *,
        user_id: str,
        request_id: str,
        chunk_interval_ms: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        client = self._pick()
        events = client.start(
            outline, user_id=user_id, request_id=request_id, chunk_interval_ms=chunk_interval_ms
        )
        return self._remembered(client, events)

    def start_plan(
        self,
        document_id: str,
        *,
        user_id: str,
        request_id: str,
        token: str,
        chunk_interval_ms: int = 0,
    ) -> AsyncGenerator[RunEvent, None]:
        client = self._pick()
        events = client.start_plan(
            document_id,
            user_id=user_id,
            request_id=request_id,
            token=token,
            chunk_interval_ms=chunk_interval_ms,
        )
        return self._remembered(client, events)

    def follow(
        self, run_id: str, *, user_id: str, after_seq: int
    ) -> AsyncGenerator[RunInfo | RunEvent, None]:
        return self._home(run_id).follow(run_id, user_id=user_id, after_seq=after_seq)

    async def cancel(self, run_id: str, *, user_id: str) -> RunStatus:
        return await self._home(run_id).cancel(run_id, user_id=user_id)

    async def get_document(self, run_id: str, *, user_id: str) -> document_pb2.Document:
        return await self._home(run_id).get_document(run_id, user_id=user_id)

    async def list_runs(self, *, user_id: str) -> list[RunInfo]:
        """Every generator's list (each knows the runs it started), once per run, oldest
        first. A generator that does not answer is left out (its runs could not be resumed
        now anyway); raises the first failure when none answers."""
        answers = await asyncio.gather(
            *(c.list_runs(user_id=user_id) for c in self._clients), return_exceptions=True
        )
        lists = [a for a in answers if isinstance(a, list)]
        if not lists:
            raise next(a for a in answers if isinstance(a, BaseException))
        runs: dict[str, RunInfo] = {}
        for info in itertools.chain.from_iterable(lists):
            runs.setdefault(info.run_id, info)
        return sorted(runs.values(), key=lambda info: info.started_at_unix_ms)

    async def limits(self, *, timeout_s: float) -> dict[str, int]:
        return await self._pick().limits(timeout_s=timeout_s)

    def close(self) -> None:
        for client in self._clients:
            client.close()


async def unready(channels: list[grpc.aio.Channel]) -> dict[str, str] | None:
    """None while one generator serves (runs start on those that are ready); else the
    `/readyz` answer: `generator_unreachable` (with the gRPC code) or `generator_not_serving`."""
    answers = await asyncio.gather(
        *(
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
            for channel in channels
        ),
        return_exceptions=True,
    )
    serving = health_pb2.HealthCheckResponse.SERVING
    if any(getattr(answer, "status", None) == serving for answer in answers):
        return None
    error = next((a for a in answers if isinstance(a, grpc.aio.AioRpcError)), None)
    if error is not None:
        return {"status": "generator_unreachable", "detail": error.code().name}
    return {"status": "generator_not_serving"}
