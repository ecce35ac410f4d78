"""`generate.options.chunk_interval_ms` (coalesced chunks) and gRPC event batches: fewer
messages, the same text, `seq` numbering and `text_sha256`. Real edge, generator, summary and
scripted OpenAI server, on both run-log backends; the coalescing writer on a real log."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc, outline_pb2

from services.generator.chunk_coalescing import CoalescingWriter, coalescing
from services.generator.event_batches import MAX_BATCH_EVENTS, follow_batches, split
from services.generator.runs.log import MemoryRunLog
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.stack import Stack, start_stack

TOKENS = [f" word{i}" for i in range(60)] + ["."]
OUTLINE = {
    "document_id": "coalesce",
    "title": "Coalescing",
    "sections": [{"id": "only", "title": "The only section", "target_tokens": 400}],
}


@pytest.fixture
async def stack(runlog_url: str | None) -> AsyncIterator[Stack]:
    # All deltas in one burst: well inside any interval, however busy the machine.
    stack = await start_stack(
        ScriptedLLM(lambda _n, _body: Reply(tokens=list(TOKENS))), runlog_url=runlog_url
    )
    yield stack
    await stack.close()


async def _run(stack: Stack, options: dict[str, Any] | None) -> list[dict[str, Any]]:
    client = await stack.connect()
    frame: dict[str, Any] = {"type": "generate", "outline": OUTLINE}
    if options is not None:
        frame["options"] = options
    await client.send(frame)
    return await client.run_to_end()


def _chunks(frames: list[dict[str, Any]]) -> list[str]:
    return [f["delta"] for f in frames if f["type"] == "section_chunk"]


async def test_coalesced_chunks_carry_the_same_text_seq_and_sha(stack: Stack) -> None:
    per_delta = await _run(stack, None)
    coalesced = await _run(stack, {"chunk_interval_ms": 1000})
    for frames in (per_delta, coalesced):
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        assert frames[-1]["type"] == "run_end" and frames[-1]["status"] == "completed"
        end = next(f for f in frames if f["type"] == "section_end")
        text = "".join(_chunks(frames))
        assert end["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert end["chars"] == len(text)
        assert all(_chunks(frames))  # never an empty delta
    assert "".join(_chunks(coalesced)) == "".join(_chunks(per_delta))
    # The first delta goes at once; the burst after it is held and sent together.
    assert _chunks(coalesced)[0] == _chunks(per_delta)[0]
    assert len(_chunks(coalesced)) < len(_chunks(per_delta))
    # The other events are unchanged, in the same order.
    assert [f["type"] for f in coalesced if f["type"] != "section_chunk"] == [
        f["type"] for f in per_delta if f["type"] != "section_chunk"
    ]


async def test_chunk_interval_out_of_range_is_refused(stack: Stack) -> None:
    client = await stack.connect()
    for bad in (1001, -1, "10", 2.5):
        frame = {"type": "generate", "outline": OUTLINE, "options": {"chunk_interval_ms": bad}}
        await client.send({**frame, "request_id": "bad"})
        answer = await client.recv()
        assert answer["type"] == "error" and answer["code"] == "invalid_frame", (bad, answer)
    # Straight over gRPC, past the edge's schema: INVALID_ARGUMENT, and no run.
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.StartRun(
                generator_pb2.StartRunRequest(
                    outline=_outline_message(), user_id="svc", chunk_interval_ms=5000
                ),
                timeout=10,
            ):
                pass
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = await stub.ListRuns(generator_pb2.ListRunsRequest(user_id="svc"), timeout=10)
        assert list(listed.runs) == []


def _outline_message() -> outline_pb2.Outline:
    return outline_pb2.Outline(
        document_id=OUTLINE["document_id"],
        title=OUTLINE["title"],
        sections=[outline_pb2.OutlineSection(**s) for s in OUTLINE["sections"]],  # type: ignore[arg-type]
    )


async def test_batched_replay_is_the_same_log_in_fewer_messages(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        single = [
            r.event
            async for r in stub.StartRun(
                generator_pb2.StartRunRequest(outline=_outline_message(), user_id="svc"),
                timeout=30,
            )
        ]
        run_id = single[0].run_id
        messages = [
            r
            async for r in stub.AttachRun(
                generator_pb2.AttachRunRequest(run_id=run_id, user_id="svc", batch=True),
                timeout=30,
            )
        ]
    assert messages[0].HasField("run")
    replayed = []
    for message in messages[1:]:
        if message.HasField("batch"):
            assert len(message.batch.events) > 1
            replayed.extend(message.batch.events)
        else:
            replayed.append(message.event)
    assert replayed == single  # every event, equal field by field, in order
    assert len(messages) - 1 < len(single)  # the ended run's log came in batches


def _chunk(delta: str) -> events_pb2.SectionChunk:
    return events_pb2.SectionChunk(section_id="s", index=0, delta=delta)


async def test_coalescing_writer_holds_deltas_until_the_interval_or_the_next_event() -> None:
    log = MemoryRunLog("run_x")
    assert coalescing(log, 0) is log  # per delta: the log itself
    writer = CoalescingWriter(log, interval_ms=1000)
    writer.append(section_start=events_pb2.SectionStart(section_id="s", index=0, attempt=1))
    for delta in ("a", "b", "c"):
        writer.append(section_chunk=_chunk(delta))
    writer.append(section_end=events_pb2.SectionEnd(section_id="s", index=0))
    writer.append(section_start=events_pb2.SectionStart(section_id="t", index=1, attempt=1))
    writer.append(section_chunk=_chunk("d"))  # a new section's first delta goes at once
    writer.append(section_chunk=_chunk("e"))
    await writer.aclose()  # appends what is held
    events = [e async for e in _until(log, 7)]
    assert [e.seq for e in events] == list(range(1, 8))
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds == [
        "section_start",
        "section_chunk",
        "section_chunk",
        "section_end",
        "section_start",
        "section_chunk",
        "section_chunk",
    ]
    assert [e.section_chunk.delta for e in events if e.HasField("section_chunk")] == [
        "a",
        "bc",
        "d",
        "e",
    ]


async def test_a_held_chunk_is_sent_when_its_interval_is_up() -> None:
    log = MemoryRunLog("run_y")
    writer = CoalescingWriter(log, interval_ms=20)
    writer.append(section_chunk=_chunk("first"))
    writer.append(section_chunk=_chunk("second"))
    writer.append(section_chunk=_chunk(" third"))
    assert log.last_seq == 1
    # No other event comes: the timer alone appends the held text.
    events = [e async for e in _until(log, 2)]
    assert [e.section_chunk.delta for e in events] == ["first", "second third"]


async def _until(log: MemoryRunLog, last_seq: int) -> AsyncIterator[events_pb2.RunEvent]:
    async with asyncio.timeout(30):
        async for event in log.follow(0):
            yield event
            if event.seq == last_seq:
                return


async def test_follow_batches_gives_what_is_ready_together_within_bounds() -> None:
    log = MemoryRunLog("run_z")
    for index in range(MAX_BATCH_EVENTS + 10):
        log.append(section_chunk=_chunk(str(index)))
    batches = follow_batches(log, 0)
    first = await anext(batches)
    second = await anext(batches)
    assert len(first) == MAX_BATCH_EVENTS and len(second) == 10
    assert [e.seq for e in first + second] == list(range(1, MAX_BATCH_EVENTS + 11))
    log.append(run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_COMPLETED))
    assert [e.seq for e in await anext(batches)] == [MAX_BATCH_EVENTS + 11]
    with pytest.raises(StopAsyncIteration):
        await anext(batches)
    big = [
        events_pb2.RunEvent(seq=i, summary_update=events_pb2.SummaryUpdate(summary="x" * 400_000))
        for i in range(1, 6)
    ]
    assert [len(b) for b in split(big)] == [2, 2, 1]  # about 1 MiB per batch at most
