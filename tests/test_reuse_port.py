"""`DOCGEN_EDGE_REUSE_PORT`: several edge processes' sites listen on one port (SO_REUSEPORT),
as docs/operations.md ("Several cores on one host") runs them; without it the second refuses."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest
from aiohttp import web

from services.edge.app import create_app, edge_site, server_options
from services.edge.settings import EdgeSettings
from tests.support.processes import free_port

SECRET = "reuse-port-test-secret-0123456789abcdef"


async def _serve(settings: EdgeSettings) -> web.AppRunner:
    runner = web.AppRunner(create_app(settings), **server_options(settings))
    await runner.setup()
    try:
        await edge_site(runner, settings.host, settings.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def test_two_edges_share_a_port_with_reuse_port_and_not_without() -> None:
    port = free_port()
    base = EdgeSettings(
        host="127.0.0.1", port=port, jwt_secret=SECRET, generator_addr="127.0.0.1:9"
    )
    shared = dataclasses.replace(base, reuse_port=True)
    runners = [await _serve(shared)]
    try:
        runners.append(await _serve(shared))
        async with aiohttp.ClientSession() as session:
            for _ in range(4):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert response.status == 200
        with pytest.raises(OSError):
            runners.append(await _serve(dataclasses.replace(base, reuse_port=False)))
    finally:
        for runner in runners:
            await runner.cleanup()
