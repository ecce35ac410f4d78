"""An internal consumer calling the generator directly over gRPC, on both run-log backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from docgen.v1 import generator_pb2, generator_pb2_grpc

from tests.support.stack import OUTLINE_3, Stack, outline_message, start_stack


@pytest.fixture
async def stack(runlog_url: str | None) -> AsyncIterator[Stack]:
    stack = await start_stack(runlog_url=runlog_url)
    yield stack
    await stack.close()


async def test_grpc_consumer_gets_the_same_event_sequence_as_a_websocket_client(
    stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        events = [
            r.event
            async for r in stub.StartRun(
                generator_pb2.StartRunRequest(outline=outline_message(), user_id="svc-a"),
                timeout=30,
            )
        ]
    grpc_kinds = [e.WhichOneof("payload") for e in events]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    client = await stack.connect()
    await client.send({"type": "generate", "outline": OUTLINE_3})
    frames = await client.run_to_end()
    assert [f["type"] for f in frames] == grpc_kinds
    assert grpc_kinds[0] == "run_started" and grpc_kinds[-1] == "run_end"


async def test_attach_replays_then_follows_and_reports_bad_cursors(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        call = stub.StartRun(
            generator_pb2.StartRunRequest(outline=outline_message(), user_id="svc"), timeout=30
        )
        first = (await call.read()).event
        attached = [
            r.event
            async for r in stub.AttachRun(
                generator_pb2.AttachRunRequest(run_id=first.run_id, user_id="svc", after_seq=1),
                timeout=30,
            )
            if r.HasField("event")  # the first message is the run's `RunInfo`
        ]
        assert [e.seq for e in attached] == list(range(2, attached[-1].seq + 1))
        assert attached[-1].HasField("run_end")
        call.cancel()

        try:
            async for _ in stub.AttachRun(
                generator_pb2.AttachRunRequest(
                    run_id=first.run_id, user_id="svc", after_seq=10_000
                ),
                timeout=5,
            ):
                pass
            raise AssertionError("expected OUT_OF_RANGE")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.OUT_OF_RANGE

        try:
            await stub.CancelRun(
                generator_pb2.CancelRunRequest(run_id=first.run_id, user_id="other"), timeout=5
            )
            raise AssertionError("expected NOT_FOUND")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
        ended = await stub.CancelRun(
            generator_pb2.CancelRunRequest(run_id=first.run_id, user_id="svc"), timeout=5
        )
        assert ended.already_ended
