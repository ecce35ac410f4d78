"""The generator's run directory (what `ListRuns` lists and what makes `StartRun` idempotent)
forgets a run once the run has expired, whether or not its user ever calls again: one entry
per run used to stay for the life of the process, on both run-log backends."""

from __future__ import annotations

import grpc
from docgen.v1 import generator_pb2, generator_pb2_grpc

from tests.support.stack import outline_message, start_stack, wait_for

RUN_TTL_S = 0.5


async def test_an_expired_run_leaves_the_directory_without_being_listed(
    runlog_url: str | None,
) -> None:
    stack = await start_stack(generator={"run_ttl_s": RUN_TTL_S}, runlog_url=runlog_url)
    try:
        directory = stack.generator.servicer._directory
        async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            users = [f"once-{i}" for i in range(3)]
            for user in users:
                request = generator_pb2.StartRunRequest(
                    outline=outline_message(), user_id=user, request_id="r1"
                )
                events = [response async for response in stub.StartRun(request, timeout=30)]
                assert events[-1].event.HasField("run_end")
                assert [e.request_id for e in directory.entries(user)] == ["r1"]

            # Nobody lists or repeats anything: the entries go once the runs expire.
            await wait_for(lambda: not any(directory.entries(u) for u in users), timeout=10)
            assert directory._by_user == {}
            for user in users:
                listed = await stub.ListRuns(
                    generator_pb2.ListRunsRequest(user_id=user), timeout=10
                )
                assert list(listed.runs) == []
    finally:
        await stack.close()
