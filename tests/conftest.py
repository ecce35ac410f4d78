from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.redis_server import RedisServer
from tests.support.stack import Stack, start_stack

# Service processes started by tests must not fight over the default metrics ports.
os.environ.setdefault("DOCGEN_GENERATOR_METRICS_PORT", "0")
os.environ.setdefault("DOCGEN_SUMMARY_METRICS_PORT", "0")
os.environ.setdefault("DOCGEN_EDGE_METRICS_PORT", "0")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (a missing binary fails the tests that need it)."""
    server = RedisServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture(params=["memory", "redis"])
def runlog_url(request: pytest.FixtureRequest) -> str | None:
    """Runs a test once per run-log backend: None (in memory, the default) and an emptied
    Redis, passed on as `start_stack(..., runlog_url=...)`."""
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    stack = await start_stack()
    yield stack
    await stack.close()
