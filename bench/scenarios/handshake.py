"""Handshake: sequential authenticated WebSocket handshakes, TCP connect to `101` received,
idle and again while streams are running; beside a bare aiohttp + pyjwt endpoint."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

from bench.load import SETTLE_S, EdgeStreams, ramp_s_for
from bench.scenarios import Context
from bench.stats import describe, repeated
from bench.wsclient import HandshakeFailed, timed_handshake, token

FLOW_WAIT_S = 15.0
"""How long to wait for the load streams' first tokens before the handshakes under load."""

HOST = "127.0.0.1"
WARMUP = 20
# The longest run an outline may ask for (the generator's per-section limit).
MAX_SECTION_TOKENS = 4096


async def sequential(port: int, count: int, prefix: str, failures: Counter[str]) -> list[float]:
    tokens = [token(f"{prefix}-{i}") for i in range(count + WARMUP)]
    samples: list[float] = []
    for index, jwt in enumerate(tokens):
        try:
            elapsed = await timed_handshake(HOST, port, jwt)
        except (HandshakeFailed, OSError) as error:
            failures[f"{type(error).__name__}: {error}"[:120]] += 1
            continue
        if index >= WARMUP:
            samples.append(elapsed)
    return samples


async def run(ctx: Context) -> dict[str, Any]:
    config = ctx.config
    assert ctx.stack is not None and ctx.bare is not None
    edge_port = ctx.stack.edge_port
    _, bare_port = ctx.bare
    failures: Counter[str] = Counter()
    edge_idle, bare_idle, edge_loaded = [], [], []
    for repeat in range(config.handshake_repeats):
        ctx.say(
            f"handshake: idle repeat {repeat + 1}/{config.handshake_repeats} "
            f"({config.handshakes} each)"
        )
        edge_idle.append(
            await sequential(edge_port, config.handshakes, f"hs-idle-{repeat}", failures)
        )
        bare_idle.append(
            await sequential(bare_port, config.handshakes, f"hs-bare-{repeat}", failures)
        )

    streams = config.handshake_load_streams
    ctx.say(f"handshake: starting {streams} streams of {config.rate:g} tokens/s")
    load = EdgeStreams(
        ctx.stack.ws_url,
        streams,
        min(MAX_SECTION_TOKENS, math.ceil(config.rate * 130)),
    )
    last_start = await load.start(ramp_s_for(streams))
    await asyncio.sleep(max(0.0, last_start + SETTLE_S - time.time()))
    # On a busy machine the first tokens may take longer than the settle time: the handshakes
    # are measured "under load" only once tokens flow.
    flowing_by = time.monotonic() + FLOW_WAIT_S
    while not len(load.samples.delay_s) and time.monotonic() < flowing_by:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    window_start = time.time()
    for repeat in range(config.handshake_repeats):
        ctx.say(f"handshake: under load, repeat {repeat + 1}/{config.handshake_repeats}")
        edge_loaded.append(
            await sequential(edge_port, config.handshakes, f"hs-load-{repeat}", failures)
        )
    window_end = time.time()
    delays = load.samples.window(window_start, window_end)
    ended_early = load.first_end_at is not None and load.first_end_at < window_end
    await load.finish(timeout_s=0.0)  # the runs are cancelled after the generator's grace
    return {
        "edge_idle_ms": repeated(edge_idle, scale=1000),
        "bare_idle_ms": repeated(bare_idle, scale=1000),
        "edge_under_load_ms": repeated(edge_loaded, scale=1000),
        "load": {
            "streams": streams,
            "rate": config.rate,
            "relay_delay_ms_during_handshakes": describe(delays, scale=1000),
            "streams_ended_inside_window": ended_early,
        },
        "failures": dict(failures),
    }
