"""The run log's Redis is not open to whoever reaches it (issue 18, item 6): ACL users with
passwords and TLS (`rediss://`) against a real redis-server, and an outline read back from
Redis is checked again before a taken-over run spends LLM time on it."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc, outline_pb2

from services.common.grpc_client import channel
from services.generator.runs.store.redis.keys import ACTIVE_RUNS_KEY, meta_key
from tests.support.processes import free_port, stop_popen
from tests.support.stack import OUTLINE_3, start_stack
from tests.test_grpc_tls import make_pki

PASSWORD = "run-log-password-" + "p" * 24


def redis_server(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *args]
        + (["--port", str(port)] if "--tls-port" not in args else ["--port", "0"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, port


@pytest.fixture
def acl_redis() -> Iterator[int]:
    """A redis-server whose default user is off; `docgen` may touch docgen:* keys only."""
    process, port = redis_server(
        *("--user", "default", "off"),
        *(
            "--user",
            "docgen",
            "on",
            f">{PASSWORD}",
            "~docgen:*",
            "&docgen:*",
            "+@all",
            "-@dangerous",
        ),
    )
    try:
        time.sleep(0.3)
        yield port
    finally:
        stop_popen(process)


async def run_a_document(runlog_url: str) -> str:
    stack = await start_stack(runlog_url=runlog_url)
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "outline": OUTLINE_3})
        frames = await client.run_to_end()
        return str(frames[-1]["status"])
    finally:
        await stack.close()


async def test_an_acl_user_with_a_password_runs_documents(acl_redis: int) -> None:
    url = f"redis://docgen:{PASSWORD}@127.0.0.1:{acl_redis}/0"
    assert await run_a_document(url) == "completed"
    # Anyone else is refused by Redis itself: no user, the wrong password, or the default user.
    for bad in (
        f"redis://127.0.0.1:{acl_redis}/0",
        f"redis://docgen:wrong@127.0.0.1:{acl_redis}/0",
    ):
        client = aioredis.Redis.from_url(bad)
        try:
            refused = r"(?i)auth|NOPERM|WRONGPASS|username-password|disabled"
            with pytest.raises(Exception, match=refused):
                await client.hgetall(meta_key("run_x"))
        finally:
            await client.aclose()


def tls_redis_server(cert: Path, key: Path, ca: Path) -> tuple[subprocess.Popen[bytes], int]:
    tls_port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, tls_port


async def test_rediss_with_tls_runs_documents(tmp_path: Path) -> None:
    cert, key, ca = make_pki(tmp_path)
    process, tls_port = tls_redis_server(cert, key, ca)
    try:
        await asyncio.sleep(0.3)
        url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
        assert await run_a_document(url) == "completed"
        # Plaintext to the TLS port gets nothing.
        plain = aioredis.Redis.from_url(
            f"redis://:{PASSWORD}@127.0.0.1:{tls_port}/0", socket_timeout=2
        )
        try:
            with pytest.raises(Exception):  # noqa: B017 - any failure: it must not answer
                await plain.ping()
        finally:
            await plain.aclose()
    finally:
        stop_popen(process)


async def test_a_planted_outline_is_checked_again_on_takeover(redis_server: Any) -> None:
    """Someone who can write to Redis plants an unfinished run whose outline is past every
    limit (the report: a planted run buys unlimited LLM time). The generator that takes it
    over ends it `failed` without a single LLM request."""
    redis_server.flush()
    planted = outline_pb2.Outline(document_id="planted", title="Planted")
    for index in range(200):  # 200 sections x 4096 tokens: far past the 32 768 total
        planted.sections.add(id=f"s{index}", title=f"S{index}", brief="b", target_tokens=4096)
    writer = aioredis.Redis.from_url(redis_server.url)
    try:
        await writer.hset(
            meta_key("run_planted"),
            mapping={
                "user": "victim",
                "status": "running",
                "outline": planted.SerializeToString(),
                "request_id": "",
                "trace_id": "",
                "created_ms": time.time_ns() // 1_000_000,
                "writer": "dead/1/x",
            },
        )
        await writer.sadd(ACTIVE_RUNS_KEY, "run_planted")
    finally:
        await writer.aclose()
    stack = await start_stack(runlog_url=redis_server.url, generator={"run_lease_s": 0.5})
    try:
        events: list[events_pb2.RunEvent] = []
        deadline = time.monotonic() + 20
        async with channel(stack.generator_addr) as dial:
            stub = generator_pb2_grpc.GeneratorServiceStub(dial)
            while not events and time.monotonic() < deadline:
                try:
                    async for answer in stub.AttachRun(
                        generator_pb2.AttachRunRequest(run_id="run_planted", user_id="victim"),
                        timeout=10,
                    ):
                        if answer.HasField("event"):
                            events.append(answer.event)
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)  # not taken over yet
        assert events and events[-1].HasField("run_end"), events
        assert events[-1].run_end.status == events_pb2.RUN_STATUS_FAILED
        assert not any(e.HasField("section_start") for e in events)
        assert stack.llm.requests == []
    finally:
        await stack.close()
