"""The multiplexed event stream (`OpenEventStream`): many runs' events on one gRPC stream per
edge–generator channel, with real peers (scripted LLM, summary, generator, edge), on both
run-log backends where a run log is involved."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc

from services.generator.event_batches import MAX_BATCH_EVENTS
from services.generator.event_stream import EventStream
from services.generator.server import GeneratorServer
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import OUTLINE_3, Stack, outline_message, start_edge, start_stack, wait_for

TEXT = " ".join(f"Sentence {i} of the section goes on here." for i in range(12))
# The frame fields that differ between two runs of the same outline (and timings: `*_ms`).
RUN_SPECIFIC = {"run_id", "started_at", "request_id", "ts"}


def slow_llm(token_delay_s: float = 0.01) -> ScriptedLLM:
    return ScriptedLLM(lambda n, body: Reply(tokens=words(TEXT), token_delay_s=token_delay_s))


def event(seq: int, text: str = "x") -> events_pb2.RunEvent:
    return events_pb2.RunEvent(
        run_id="r", seq=seq, section_chunk=events_pb2.SectionChunk(section_id="s", delta=text)
    )


def assert_whole(frames: list[dict[str, Any]]) -> None:
    seqs = [f["seq"] for f in frames if "seq" in f]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert frames[-1]["type"] == "run_end" and frames[-1]["status"] == "completed"


def normalized(value: Any) -> Any:
    if isinstance(value, list):
        return [normalized(item) for item in value]
    if isinstance(value, dict):
        return {
            k: normalized(v)
            for k, v in value.items()
            if k not in RUN_SPECIFIC and not k.endswith("_ms")
        }
    return value


class Reader:
    """An `OpenEventStream` call, read in the background into per-key event lists."""

    def __init__(self, stub: generator_pb2_grpc.GeneratorServiceStub) -> None:
        self._stub = stub
        self.call = stub.OpenEventStream(generator_pb2.OpenEventStreamRequest())
        self.stream_id = ""
        self.messages: list[generator_pb2.EventStreamMessage] = []
        self.events: dict[str, list[events_pb2.RunEvent]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Reader:
        first = await self.call.read()
        self.stream_id = first.stream_id
        assert self.stream_id and not first.entries
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while (message := await self.call.read()) is not grpc.aio.EOF:
                self.messages.append(message)
                for entry in message.entries:
                    self.events.setdefault(entry.follow_key, []).extend(entry.events)

    def start_run(self, user_id: str, key: str) -> Any:
        """A `StartRun` of the test outline whose events come through this stream under `key`."""
        return self._stub.StartRun(
            generator_pb2.StartRunRequest(
                outline=outline_message(),
                user_id=user_id,
                event_stream_id=self.stream_id,
                follow_key=key,
            ),
            timeout=30,
        )

    def ended(self, key: str) -> bool:
        return any(e.HasField("run_end") for e in self.events.get(key, []))

    def close(self) -> None:
        self.call.cancel()
        if self.task is not None:
            self.task.cancel()


@pytest.fixture
async def slow_stack(runlog_url: str | None) -> AsyncIterator[Stack]:
    stack = await start_stack(slow_llm(), runlog_url=runlog_url)
    yield stack
    await stack.close()


async def test_events_pushed_while_the_writer_is_busy_leave_in_one_message() -> None:
    stream = EventStream("s1")
    messages = stream.messages()
    assert (await anext(messages)).stream_id == "s1"
    # The writer is "blocked" (not iterated) while two runs push: one message carries both.
    stream.push("a", [event(1)])
    stream.push("b", [event(1), event(2)])
    stream.push("a", [event(2)])
    message = await anext(messages)
    assert [(e.follow_key, [x.seq for x in e.events]) for e in message.entries] == [
        ("a", [1]),
        ("b", [1, 2]),
        ("a", [2]),
    ]
    # Bounded: more than MAX_BATCH_EVENTS pending leave in several messages, in order.
    for seq in range(1, MAX_BATCH_EVENTS + 45):
        stream.push(f"k{seq % 3}", [event(seq)])
    first, second = await anext(messages), await anext(messages)
    assert len(first.entries) == MAX_BATCH_EVENTS and len(second.entries) == 44
    assert [e.events[0].seq for e in [*first.entries, *second.entries]] == list(
        range(1, MAX_BATCH_EVENTS + 45)
    )
    stream.close()
    assert await anext(messages, None) is None


async def test_messages_are_paced_by_the_interval_and_a_lone_event_goes_at_once() -> None:
    # Long enough that a busy machine's stalls cannot pass for pacing or defeat it.
    interval_s = 1.0
    stream = EventStream("s1", interval_s=interval_s)
    messages = stream.messages()
    await anext(messages)
    loop = asyncio.get_running_loop()
    # Quiet before: the first event is written at once.
    started = loop.time()
    stream.push("a", [event(1)])
    first = await anext(messages)
    assert [e.events[0].seq for e in first.entries] == [1]
    assert loop.time() - started < interval_s / 2
    # Events arriving within the interval after a message wait for it, and leave together.
    waiting = asyncio.ensure_future(anext(messages))
    for seq in (2, 3, 4):
        await asyncio.sleep(interval_s / 20)
        stream.push("a", [event(seq)])
        assert not waiting.done()
    second = await waiting
    assert [e.events[0].seq for e in second.entries] == [2, 3, 4]
    assert loop.time() - started >= interval_s
    # After a quiet interval, at once again.
    await asyncio.sleep(interval_s * 1.2)
    pushed_at = loop.time()
    stream.push("b", [event(1)])
    assert [e.follow_key for e in (await anext(messages)).entries] == ["b"]
    assert loop.time() - pushed_at < interval_s / 2
    stream.close()
    assert await anext(messages, None) is None


async def test_the_generator_paces_its_event_streams_by_its_setting() -> None:
    """`DOCGEN_EVENT_STREAM_INTERVAL_MS` reaches the streams the server opens (a refactor once
    dropped it: the servicer took `streams or EventStreams()`, and no stream is open yet)."""
    # A token every 10 ms, a message every 300 ms at most: the run's events leave in groups.
    stack = await start_stack(slow_llm(0.01), generator={"event_stream_interval_ms": 300.0})
    try:
        async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
            reader = await Reader(generator_pb2_grpc.GeneratorServiceStub(channel)).start()
            call = reader.start_run("svc", "key")
            assert [r async for r in call] == []
            await wait_for(lambda: reader.ended("key"), timeout=15)
            events = len(reader.events["key"])
            # Unpaced, each event is written as it comes: about one message per event.
            assert len(reader.messages) <= events / 4, (len(reader.messages), events)
            reader.close()
    finally:
        await stack.close()


async def test_runs_via_the_event_stream_get_the_events_of_their_own_call(
    slow_stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(slow_stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        reader = await Reader(stub).start()
        calls = [reader.start_run(f"svc{i}", f"key{i}") for i in range(3)]
        # The per-run calls carry no message and end OK once their run_end is handed over.
        for call in calls:
            assert [r async for r in call] == []
            assert await call.code() == grpc.StatusCode.OK
        await wait_for(lambda: all(reader.ended(f"key{i}") for i in range(3)), timeout=10)
        for i in range(3):
            muxed = reader.events[f"key{i}"]
            assert [e.seq for e in muxed] == list(range(1, len(muxed) + 1))
            # The same events as a caller without an event stream gets (old callers).
            plain = [
                r.event
                async for r in stub.AttachRun(
                    generator_pb2.AttachRunRequest(run_id=muxed[0].run_id, user_id=f"svc{i}"),
                    timeout=30,
                )
                if r.HasField("event")
            ]
            assert [e.SerializeToString() for e in muxed] == [e.SerializeToString() for e in plain]
        # An attach through the stream: RunInfo on the call, the events on the stream.
        run_id = reader.events["key0"][0].run_id
        attach = stub.AttachRun(
            generator_pb2.AttachRunRequest(
                run_id=run_id,
                user_id="svc0",
                after_seq=3,
                event_stream_id=reader.stream_id,
                follow_key="again",
            ),
            timeout=30,
        )
        # The run has ended, yet after_seq < last_seq: the rest is replayed through the stream.
        assert [r.WhichOneof("item") async for r in attach] == ["run"]
        await wait_for(lambda: reader.ended("again"), timeout=10)
        assert reader.events["again"][0].seq == 4
        reader.close()


async def test_unknown_stream_id_is_failed_precondition_before_anything_starts(
    stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        for call in (
            stub.StartRun(
                generator_pb2.StartRunRequest(
                    outline=outline_message(), user_id="u", event_stream_id="nope", follow_key="k"
                ),
                timeout=10,
            ),
            stub.AttachRun(
                generator_pb2.AttachRunRequest(
                    run_id="whatever", user_id="u", event_stream_id="nope", follow_key="k"
                ),
                timeout=10,
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in call:
                    pass
            assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert ("docgen-error-code", "event_stream_not_found") in tuple(
                raised.value.trailing_metadata() or ()
            )
        listed = await stub.ListRuns(generator_pb2.ListRunsRequest(user_id="u"), timeout=10)
        assert list(listed.runs) == []  # nothing started

        reader = await Reader(stub).start()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.StartRun(
                generator_pb2.StartRunRequest(
                    outline=outline_message(), user_id="u", event_stream_id=reader.stream_id
                ),
                timeout=10,
            ):
                pass
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # no follow_key
        reader.close()


async def test_a_closed_event_stream_fails_its_calls_and_drops_their_subscriptions(
    slow_stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(slow_stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        reader = await Reader(stub).start()
        call = reader.start_run("svc", "a")
        await wait_for(lambda: len(reader.events.get("a", [])) >= 5, timeout=10)
        run = await slow_stack.generator.registry.find(reader.events["a"][0].run_id, user_id="svc")
        assert run.subscribers == 1
        reader.close()  # the edge goes away
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        await wait_for(lambda: run.subscribers == 0)
        await wait_for(lambda: len(slow_stack.generator.servicer.event_streams) == 0)


async def test_a_cancelled_call_stops_pushing_into_the_stream(runlog_url: str | None) -> None:
    # Slower than `slow_stack`: the run must outlast the cancel by far on a busy machine.
    slow_stack = await start_stack(slow_llm(0.03), runlog_url=runlog_url)
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(slow_stack.close)
        channel = await cleanup.enter_async_context(
            grpc.aio.insecure_channel(slow_stack.generator_addr)
        )
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        reader = await Reader(stub).start()
        call = reader.start_run("svc", "a")
        await wait_for(lambda: len(reader.events.get("a", [])) >= 5, timeout=10)
        run_id = reader.events["a"][0].run_id
        run = await slow_stack.generator.registry.find(run_id, user_id="svc")
        call.cancel()
        await wait_for(lambda: run.subscribers == 0, timeout=10)
        await asyncio.sleep(0.3)  # what was written before the cancel is still on its way
        seen = len(reader.events["a"])
        # The run goes on (followed now without the stream) to its end; key "a" gets nothing.
        plain = [
            r.event
            async for r in stub.AttachRun(
                generator_pb2.AttachRunRequest(run_id=run_id, user_id="svc"), timeout=30
            )
            if r.HasField("event")
        ]
        assert plain[-1].HasField("run_end") and len(plain) > seen
        await asyncio.sleep(0.1)
        assert len(reader.events["a"]) == seen and not reader.ended("a")
        reader.close()


async def test_websocket_clients_get_the_same_frames_with_and_without_the_event_stream() -> None:
    results: dict[bool, list[list[dict[str, Any]]]] = {}
    for on in (False, True):
        stack = await start_stack(slow_llm(0.002), edge={"event_stream": on})
        try:
            clients = [await stack.connect(stack.token(f"user{i}")) for i in range(4)]
            for client in clients:
                await client.send({"type": "generate", "outline": OUTLINE_3})
            runs = await asyncio.gather(*(client.run_to_end() for client in clients))
            # On: one event stream carried them all; off: none was opened.
            assert len(stack.generator.servicer.event_streams) == (1 if on else 0)
            results[on] = normalized(runs)
            for frames in runs:
                assert_whole(frames)
        finally:
            await stack.close()
    assert results[True] == results[False]
    assert all(
        f["text_sha256"] for f in results[True][0] if f["type"] == "section_end"
    )  # the text itself is compared, through each section's digest


async def test_a_broken_event_stream_is_reopened_and_the_client_loses_nothing(
    slow_stack: Stack,
) -> None:
    streams = slow_stack.generator.servicer.event_streams
    client = await slow_stack.connect()
    await client.send({"type": "generate", "outline": OUTLINE_3})
    frames = [await client.recv() for _ in range(12)]
    assert len(streams) == 1
    streams.close_all()  # the generator ends it: every call using it fails, the edge re-attaches
    frames += await client.run_to_end()
    frames = [f for f in frames if f["type"] != "ack"]
    assert_whole(frames)
    assert not [f for f in frames if f["type"] == "error"]  # re-attached without a word
    assert len(streams) == 1  # a new one


async def test_several_generators_each_get_their_own_event_stream() -> None:
    stack = await start_stack(slow_llm(0.002))
    second = GeneratorServer(stack.generator.settings, "127.0.0.1:0")
    await second.start()
    addresses = f"127.0.0.1:{stack.generator.port},127.0.0.1:{second.port}"
    runner, port = await start_edge(
        dataclasses.replace(stack.edge_settings, generator_addr=addresses)
    )
    try:
        stack.edge_port = port  # connect() to the round-robin edge
        clients = [await stack.connect(stack.token(f"user{i}")) for i in range(6)]
        for client in clients:
            await client.send({"type": "generate", "outline": OUTLINE_3})
        for frames in await asyncio.gather(*(client.run_to_end() for client in clients)):
            assert_whole(frames)
        # Runs went to both generators, and each holds an event stream of the edge's: one
        # round-robin channel reached one of them only, and calls landing on the other went
        # without it (refused with event_stream_not_found, then a gRPC stream per run).
        runs = []
        for generator in (stack.generator, second):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{generator.port}") as channel:
                stub = generator_pb2_grpc.GeneratorServiceStub(channel)
                count = 0
                for i in range(6):
                    request = generator_pb2.ListRunsRequest(user_id=f"user{i}")
                    count += len((await stub.ListRuns(request, timeout=10)).runs)
                runs.append(count)
        assert sum(runs) == 6 and all(runs), runs
        assert (
            len(stack.generator.servicer.event_streams) == len(second.servicer.event_streams) == 1
        )
        # The edge asks every generator for a user's runs (each lists the runs it started).
        for i, client in enumerate(clients):
            await client.send({"type": "runs", "request_id": f"l{i}"})
            answer = await client.recv()
            assert answer["command"] == "runs" and len(answer["runs"]) == 1, answer
            # A resume goes to the generator holding the run (in-memory logs: only it knows
            # the run), not round robin.
            await client.send(
                {"type": "resume", "run_id": answer["runs"][0]["run_id"], "after_seq": 0}
            )
            replay = [f for f in await client.run_to_end() if f["type"] != "ack"]
            assert_whole(replay)
        # One generator gone: the edge stays ready, and new runs start on the other.
        await second.stop()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200, await response.text()
        for client in clients[:3]:
            await client.send({"type": "generate", "outline": OUTLINE_3})
            assert_whole(await client.run_to_end())
        # The runs list leaves out the generator that does not answer: what can be resumed.
        kept = set()
        for i, client in enumerate(clients):
            await client.send({"type": "runs", "request_id": f"after{i}"})
            answer = await client.recv()
            assert answer["type"] == "ack", answer
            kept.update(run["run_id"] for run in answer["runs"])
        assert 3 <= len(kept) < 9, kept  # the 3 new runs and the first generator's old ones
    finally:
        await runner.cleanup()
        await second.stop()
        await stack.close()
