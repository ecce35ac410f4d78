"""Scale-out on Redis Streams with real processes: 2 edges, 2 generators, summary and Redis.
A run survives the loss of the edge and the generator writing it; a cancel reaches the writer
from the other generator; a Redis restart mid-run has its documented outcome."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import redis.asyncio as aioredis
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc, outline_pb2

from services.common.grpc_client import target
from services.generator.server import GeneratorServer
from tests.support.processes import (
    free_port,
    start_all,
    start_edge_process,
    start_grpc_service,
)
from tests.support.redis_server import RedisServer
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import ProtocolClient, Stack, sections_text, start_stack, wait_for

SECTION_TEXT = " ".join(f"Sentence {i} of this section is here." for i in range(8))
LEASE_S = 1.0
# Timing is printed, not asserted tightly: five processes share two cores here, often with a
# busy machine around them, and a scheduling stall of seconds is normal. The tests assert the
# outcome and the order; an upper bound only tells "took over" from "never did", with a margin
# of ten times the expected delay. The delays themselves belong to `make bench`.
PATIENCE_S = 10 * (LEASE_S + LEASE_S / 2 + 1.5)


def outline(sections: int = 3) -> dict[str, Any]:
    return {
        "document_id": "doc-scale",
        "title": "Scaling out",
        "sections": [
            {"id": f"s{i}", "title": f"Section {i}", "brief": "b", "target_tokens": 60}
            for i in range(sections)
        ],
    }


def outline_message(sections: int) -> outline_pb2.Outline:
    return outline_pb2.Outline(
        document_id="doc-scale",
        title="Scaling out",
        sections=[
            outline_pb2.OutlineSection(id=f"s{i}", title=f"Section {i}", target_tokens=60)
            for i in range(sections)
        ],
    )


def assert_whole(frames: list[dict[str, Any]]) -> None:
    """Gap-free, duplicate-free seq; every ended section's text matches its sha256."""
    seqs = [f["seq"] for f in frames if "seq" in f]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    texts = sections_text([f for f in frames if "seq" in f])
    for end in (f for f in frames if f["type"] == "section_end"):
        assert hashlib.sha256(texts[end["section_id"]].encode()).hexdigest() == end["text_sha256"]


@dataclass
class Cluster:
    llm: ScriptedLLM
    redis: aioredis.Redis
    summary: asyncio.subprocess.Process
    generators: dict[str, asyncio.subprocess.Process]
    """By listen address."""
    edges: list[tuple[asyncio.subprocess.Process, int]]
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    async def connect(self, edge: int, user: str = "alice") -> ProtocolClient:
        from services.edge.auth import mint_dev_token
        from services.edge.settings import DEV_JWT_SECRET

        token = mint_dev_token(user, secret=DEV_JWT_SECRET)
        session = aiohttp.ClientSession()
        self.sessions.append(session)
        ws = await session.ws_connect(
            f"http://127.0.0.1:{self.edges[edge][1]}/v1/ws",
            protocols=("docgen.v1", f"bearer.{token}"),
        )
        return ProtocolClient(session, ws)

    async def writer_of(self, run_id: str) -> str:
        """The listen address of the generator holding the run's lease."""
        token = (await self.redis.get(f"docgen:run:{{{run_id}}}:lease")).decode()
        pid = int(token.split("/")[1])
        return next(addr for addr, proc in self.generators.items() if proc.pid == pid)


@pytest.fixture
async def cluster(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    redis_server.flush()
    llm = ScriptedLLM(lambda n, b: Reply(tokens=words(SECTION_TEXT), token_delay_s=0.03))
    summary_addr = f"127.0.0.1:{free_port()}"
    addrs = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    # Everything started is registered for stopping the moment it exists (callbacks run in
    # reverse: edges, then generators and summary, then Redis client and LLM).
    async with contextlib.AsyncExitStack() as stack:
        await llm.start()
        stack.push_async_callback(llm.stop)
        generator_env = {
            "DOCGEN_SUMMARY_ADDR": summary_addr,
            "DOCGEN_LLM_BASE_URL": llm.base_url,
            "DOCGEN_LLM_MODEL": "scripted",
            "DOCGEN_LLM_MAX_RETRIES": "0",
            "DOCGEN_RUNLOG_URL": redis_server.url,
            "DOCGEN_RUN_LEASE_S": str(LEASE_S),
            "DOCGEN_GENERATOR_METRICS_PORT": "0",
        }
        client = aioredis.Redis.from_url(redis_server.url)
        stack.push_async_callback(client.aclose)
        # Started side by side: each is a Python process importing gRPC (a second or two).
        summary, *started = await start_all(
            stack,
            start_grpc_service("summary", summary_addr),
            *(start_grpc_service("generator", addr, **generator_env) for addr in addrs),
        )
        generators = dict(zip(addrs, started, strict=True))
        # Every edge dials both generators, round-robin (`DOCGEN_GENERATOR_ADDR` as a list).
        edges = await start_all(stack, *(start_edge_process(",".join(addrs)) for _ in range(2)))
        cluster = Cluster(llm, client, summary, generators, edges)
        try:
            yield cluster
        finally:
            for session in cluster.sessions:
                await session.close()


async def read_until_mid_section(
    client: ProtocolClient, index: int, chunks: int
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    seen = 0
    while seen < chunks:
        frame = await client.recv(timeout=20)
        frames.append(frame)
        seen += frame["type"] == "section_chunk" and frame["index"] == index
    return frames


async def test_run_survives_losing_its_edge_and_its_generator(cluster: Cluster) -> None:
    client = await cluster.connect(edge=0)
    await client.send({"type": "generate", "outline": outline(3)})
    frames = await read_until_mid_section(client, index=1, chunks=5)
    run_id = frames[0]["run_id"]
    writer = await cluster.writer_of(run_id)
    survivor = next(addr for addr in cluster.generators if addr != writer)
    # Lose edge A and the writing generator at once, mid-section, without any goodbye.
    cluster.edges[0][0].send_signal(signal.SIGKILL)
    cluster.generators[writer].send_signal(signal.SIGKILL)
    killed_at_ms = time.time() * 1000
    await cluster.edges[0][0].wait()
    await cluster.generators[writer].wait()

    resumed = await cluster.connect(edge=1)
    await resumed.send({"type": "resume", "run_id": run_id, "after_seq": frames[-1]["seq"]})
    frames += await resumed.run_to_end(timeout=60)

    assert frames[-1]["type"] == "run_end" and frames[-1]["status"] == "completed"
    assert_whole(frames)
    starts = [(f["index"], f["attempt"]) for f in frames if f["type"] == "section_start"]
    assert starts == [(0, 1), (1, 1), (1, 2), (2, 1)]
    restart = next(f for f in frames if f["type"] == "section_start" and f["attempt"] == 2)
    takeover_ms = restart["ts"] - killed_at_ms
    print(f"takeover delay: {takeover_ms:.0f} ms (lease {LEASE_S * 1000:.0f} ms)")
    assert 0 < takeover_ms < PATIENCE_S * 1000  # after the loss; see PATIENCE_S
    # The interrupted section's text is the second attempt's, whole.
    assert sections_text(frames)["s1"] == SECTION_TEXT
    # The other generator finished it.
    meta = await cluster.redis.hgetall(f"docgen:run:{{{run_id}}}")
    assert int(meta[b"writer"].decode().split("/")[1]) == cluster.generators[survivor].pid
    assert meta[b"status"] == b"completed"
    assert await cluster.redis.scard("docgen:runs:active") == 0
    # Followed to the end: a replay of the whole log through the surviving edge agrees.
    again = await cluster.connect(edge=1)
    await again.send({"type": "resume", "run_id": run_id, "after_seq": 0})
    assert await again.run_to_end() == frames


async def test_sigterm_to_the_writer_hands_its_run_over_at_once(cluster: Cluster) -> None:
    """A rolling restart: the stopping generator releases its lease instead of cancelling the
    run, the other one takes it over at its next scan, and the client, still on its socket,
    sees the section restart (its edge re-attaches through the other generator)."""
    client = await cluster.connect(edge=0)
    await client.send({"type": "generate", "outline": outline(2)})
    frames = await read_until_mid_section(client, index=0, chunks=5)
    writer = await cluster.writer_of(frames[0]["run_id"])
    cluster.generators[writer].send_signal(signal.SIGTERM)
    stopped_at_ms = time.time() * 1000
    frames += await client.run_to_end(timeout=60)
    assert await asyncio.wait_for(cluster.generators[writer].wait(), 20) == 0
    assert frames[-1]["status"] == "completed"
    assert_whole(frames)
    restart = next(f for f in frames if f["type"] == "section_start" and f["attempt"] == 2)
    handover_ms = restart["ts"] - stopped_at_ms
    print(f"handover delay on SIGTERM: {handover_ms:.0f} ms")
    # Handed over, not left to lapse: the stopping generator said so, and released its lease.
    process = cluster.generators[writer]
    assert process.stderr is not None
    logs = [
        json.loads(line)
        for line in (await process.stderr.read()).decode().splitlines()
        if line.strip()
    ]
    assert any(
        line["message"] == "run handed over" and line.get("reason") == "generator shutting down"
        for line in logs
    ), logs
    # Handed over rather than left to lapse is what the log line above proves; the delay is
    # only printed (see PATIENCE_S).
    assert 0 < handover_ms < PATIENCE_S * 1000


async def test_cancel_at_the_generator_not_writing_the_run_stops_the_llm_request(
    cluster: Cluster,
) -> None:
    client = await cluster.connect(edge=0)
    await client.send({"type": "generate", "outline": outline(2)})
    frames = await read_until_mid_section(client, index=0, chunks=5)
    run_id = frames[0]["run_id"]
    writer = await cluster.writer_of(run_id)
    other = next(addr for addr in cluster.generators if addr != writer)
    async with grpc.aio.insecure_channel(other) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        await channel.channel_ready()  # the measurement is the cancel, not a TCP connect
        sent = time.monotonic()
        answer = await stub.CancelRun(
            generator_pb2.CancelRunRequest(run_id=run_id, user_id="alice"), timeout=5
        )
    assert answer.already_ended is False
    request = cluster.llm.requests[-1]
    await wait_for(lambda: request.disconnected_at is not None, PATIENCE_S)
    latency_s = request.disconnected_at - sent  # type: ignore[operator]
    print(f"cancel latency across replicas: {latency_s * 1000:.0f} ms (goal 200 ms)")
    # The outcome: the writer closed its LLM stream before the reply ended. The 200 ms goal is
    # a timing, measured where timing is measured (docs/testing.md, "Timing").
    assert not request.completed
    assert latency_s < PATIENCE_S
    frames += await client.run_to_end()
    assert next(f for f in frames if f["type"] == "section_end")["finish_reason"] == "cancelled"
    assert frames[-1]["status"] == "cancelled"
    assert_whole(frames)
    assert len(cluster.llm.requests) == 1  # no further section was started


async def test_a_run_followed_only_through_another_generator_outlives_the_grace(
    redis_server: RedisServer,
) -> None:
    """The writer's grace period counts followers attached through any generator."""
    redis_server.flush()
    llm = ScriptedLLM(lambda n, b: Reply(tokens=words(SECTION_TEXT), token_delay_s=0.02))
    stack = await start_stack(
        llm, runlog_url=redis_server.url, generator={"run_grace_s": 0.3, "run_lease_s": 0.6}
    )
    other = GeneratorServer(stack.generator.settings, "127.0.0.1:0")
    await other.start()
    try:
        async with (
            grpc.aio.insecure_channel(stack.generator_addr) as writer_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as other_channel,
        ):
            started = generator_pb2_grpc.GeneratorServiceStub(writer_channel).StartRun(
                generator_pb2.StartRunRequest(outline=outline_message(2), user_id="u"), timeout=30
            )
            run_id = (await started.read()).event.run_id
            attached = generator_pb2_grpc.GeneratorServiceStub(other_channel).AttachRun(
                generator_pb2.AttachRunRequest(run_id=run_id, user_id="u", after_seq=1), timeout=30
            )
            assert (await attached.read()).HasField("run")  # the opening RunInfo
            events = [(await attached.read()).event]
            started.cancel()  # the writer's only local follower leaves
            while (response := await attached.read()) != grpc.aio.EOF:
                events.append(response.event)
        assert [e.seq for e in events] == list(range(2, events[-1].seq + 1))
        assert events[-1].run_end.status == events_pb2.RUN_STATUS_COMPLETED
        assert all(r.disconnected_at is None for r in llm.requests)
    finally:
        await other.stop()
        await stack.close()


# --- Redis restarted mid-run -------------------------------------------------------------------


async def test_redis_restart_with_its_data_loses_nothing(tmp_path: Path) -> None:
    """Redis with an fsync'd append-only file restarts within the retry budget: writes and
    reads are retried, the run completes whole, nobody sees an error."""
    server = RedisServer(data_dir=tmp_path)
    llm = ScriptedLLM(lambda n, b: Reply(tokens=words(SECTION_TEXT), token_delay_s=0.02))
    stack: Stack | None = None
    try:
        server.start()
        stack = await start_stack(llm, runlog_url=server.url)
        client = await stack.connect()
        await client.send({"type": "generate", "outline": outline(2)})
        frames = await read_until_mid_section(client, index=0, chunks=5)
        server.kill()
        await asyncio.sleep(0.5)  # tokens keep coming meanwhile: the writer queues them
        server.start()
        frames += await client.run_to_end(timeout=30)
        assert frames[-1]["status"] == "completed"
        assert not [f for f in frames if f["type"] == "error"]
        assert_whole(frames)
        assert [f["attempt"] for f in frames if f["type"] == "section_start"] == [1, 1]
    finally:
        if stack is not None:
            await stack.close()
        server.kill()


async def test_redis_restart_without_its_data_ends_followers_with_run_not_found(
    tmp_path: Path,
) -> None:
    """Redis without persistence loses the runs in flight: followers get `run_not_found`, the
    writer stops the LLM request (its lease is gone), nothing crashes, new runs work."""
    server = RedisServer()
    llm = ScriptedLLM(lambda n, b: Reply(tokens=words(SECTION_TEXT), token_delay_s=0.02))
    stack: Stack | None = None
    try:
        server.start()
        stack = await start_stack(llm, runlog_url=server.url)
        client = await stack.connect()
        await client.send({"type": "generate", "outline": outline(2)})
        frames = await read_until_mid_section(client, index=0, chunks=5)
        server.restart()
        error = (await client.recv_until(lambda f: f["type"] == "error", timeout=15))[-1]
        assert error["code"] == "run_not_found" and error["run_id"] == frames[0]["run_id"]
        await wait_for(lambda: llm.requests[0].disconnected_at is not None, 10)
        assert stack.generator.registry.active_runs == 0
        await client.send({"type": "generate", "outline": outline(1)})
        after = await client.run_to_end()
        assert after[-1]["status"] == "completed"
        assert_whole(after)
    finally:
        if stack is not None:
            await stack.close()
        server.kill()


# --- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("dns:///docgen-generator:50051", "dns:///docgen-generator:50051"),
        ("10.0.0.1:50051, 10.0.0.2:50051", "ipv4:10.0.0.1:50051,10.0.0.2:50051"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
    ],
)
def test_generator_address_lists_become_round_robin_targets(address: str, expected: str) -> None:
    assert target(address) == expected
