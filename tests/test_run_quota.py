"""The per-user run limit holds under a burst and across generators (issue 18, item 3). The
report: 30 back-to-back `generate`s on one socket started 5-7 runs with a limit of 4, because
the count was read before an awaited `store.create`; and with several generators each counted
only its own runs."""

from __future__ import annotations

import json
from typing import Any

import grpc
from docgen.v1 import generator_pb2, generator_pb2_grpc, outline_pb2
from google.protobuf import json_format

from services.common.grpc_client import channel
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import OUTLINE_3, start_stack

LIMIT = 4
SLOW = Reply(tokens=words(" ".join(f"word{i}" for i in range(300)) + "."), token_delay_s=0.02)


def slow_llm() -> ScriptedLLM:
    return ScriptedLLM(lambda _n, _body: SLOW)


async def test_a_burst_of_generates_starts_exactly_the_limit(runlog_url: str | None) -> None:
    stack = await start_stack(
        slow_llm(),
        generator={"max_active_runs_per_user": LIMIT},
        edge={"frame_burst": 40},
        runlog_url=runlog_url,
    )
    try:
        client = await stack.connect(stack.token("bursty"))
        frame = json.dumps({"type": "generate", "outline": OUTLINE_3})
        for _ in range(30):  # back to back, no await on an answer in between
            await client.ws.send_str(frame)
        started: list[str] = []
        refused = 0
        while len(started) + refused < 30:
            answer = await client.recv(timeout=20)
            if answer["type"] == "run_started":
                started.append(answer["run_id"])
            elif answer["type"] == "error" and "seq" not in answer:
                assert answer["code"] == "too_many_runs", answer
                refused += 1
        assert (len(started), refused) == (LIMIT, 30 - LIMIT)
        for run_id in started:
            await client.send({"type": "cancel", "run_id": run_id})
    finally:
        await stack.close()


async def _start(address: str, user: str) -> grpc.StatusCode:
    async with channel(address) as dial:
        stub = generator_pb2_grpc.GeneratorServiceStub(dial)
        request = generator_pb2.StartRunRequest(user_id=user)
        request.outline.CopyFrom(json_format.ParseDict(OUTLINE_3, outline_pb2.Outline()))
        try:
            async for _ in stub.StartRun(request, timeout=10):
                return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.UNKNOWN


async def test_the_limit_holds_across_generators_sharing_redis(redis_server: Any) -> None:
    redis_server.flush()
    options: dict[str, Any] = {"generator": {"max_active_runs_per_user": 2}}
    first = await start_stack(slow_llm(), runlog_url=redis_server.url, **options)
    try:
        second = await start_stack(slow_llm(), runlog_url=redis_server.url, **options)
        try:
            a, b = first.generator_addr, second.generator_addr
            assert await _start(a, "shared-user") == grpc.StatusCode.OK
            assert await _start(b, "shared-user") == grpc.StatusCode.OK
            # Two runs going, one on each generator: a third is refused on either.
            assert await _start(a, "shared-user") == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await _start(b, "shared-user") == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await _start(b, "another-user") == grpc.StatusCode.OK
        finally:
            await second.close()
    finally:
        await first.close()
