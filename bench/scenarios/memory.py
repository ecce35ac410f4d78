"""Memory: resident memory per idle authenticated socket with thousands open, on a fresh edge
process, beside a fresh bare aiohttp + pyjwt endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from typing import Any

import aiohttp

from bench.processes import ServiceProcess, start_bare_ws
from bench.scenarios import Context
from bench.wsclient import open_idle_socket, timed_handshake, token

HOST = "127.0.0.1"
CONCURRENCY = 100
WARMUP = 50
SETTLE_S = 2.0


async def open_sockets_metric(port: int) -> float | None:
    """The edge's own count of open sockets (`docgen_ws_open_sockets`), as a cross-check.
    None since the edge serves /metrics only on its own port (issue 18; bench edges run with
    DOCGEN_EDGE_METRICS_PORT=0); the public port answers 404."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{HOST}:{port}/metrics") as response,
        ):
            match = re.search(
                r"^docgen_ws_open_sockets (\S+)$", await response.text(), re.MULTILINE
            )
            return float(match.group(1)) if match else None
    return None


async def measure(process: ServiceProcess, port: int, count: int, prefix: str) -> dict[str, Any]:
    for index in range(WARMUP):  # first sockets pay for imports and caches, not per socket
        await timed_handshake(HOST, port, token(f"{prefix}-warm-{index}"))
    await asyncio.sleep(SETTLE_S)
    gc.collect()
    before = process.rss_bytes()
    tokens = [token(f"{prefix}-{i}") for i in range(count)]
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(jwt: str) -> asyncio.StreamWriter:
        async with limit:
            return await open_idle_socket(HOST, port, jwt)

    results = await asyncio.gather(*(one(t) for t in tokens), return_exceptions=True)
    writers = [r for r in results if isinstance(r, asyncio.StreamWriter)]
    failures = len(results) - len(writers)
    await asyncio.sleep(SETTLE_S)
    during = process.rss_bytes()
    metric = await open_sockets_metric(port)
    for writer in writers:
        writer.close()
    await asyncio.sleep(SETTLE_S)
    after = process.rss_bytes()
    opened = len(writers)
    return {
        "sockets": opened,
        "failed": failures,
        "open_sockets_metric": metric,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_open_mib": round(during / 2**20, 1),
        "rss_after_close_mib": round(after / 2**20, 1),
        "kib_per_socket": round((during - before) / opened / 1024, 1) if opened else None,
    }


async def run(ctx: Context) -> dict[str, Any]:
    assert ctx.stack is not None
    count = ctx.config.memory_sockets
    edge, edge_port = await ctx.stack.start_extra_edge("edge-memory")
    try:
        ctx.say(f"memory: {count} idle sockets on a fresh edge")
        docgen = await measure(edge, edge_port, count, "mem")
    finally:
        await edge.stop()
    bare, bare_port = await start_bare_ws(ctx.log_dir, "bare-ws-memory")
    try:
        ctx.say(f"memory: {count} idle sockets on a fresh bare aiohttp endpoint")
        baseline = await measure(bare, bare_port, count, "mem-bare")
    finally:
        await bare.stop()
    return {"edge": docgen, "bare": baseline}
