"""Handshake: sequential authenticated WebSocket handshakes, TCP connect to `101` received,
idle and again while streams are running; beside a bare aiohttp + pyjwt endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from typing import Any

from bench.load import ramp_s_for
from bench.scenarios import Context
from bench.stats import describe, repeated
from bench.wsclient import HandshakeFailed, timed_handshake, token

STARTUP_S = 120.0
"""How long the load's process may take to connect its streams and see their first tokens."""
CHILD_EXIT_S = 20.0
"""How long the load's process may take to close its sockets before it is killed."""

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
    ctx.say(f"handshake: starting {streams} streams of {config.rate:g} tokens/s (own process)")
    # The streams run in a process of their own: in this one, their thousands of frames a
    # second would delay the timed handshakes in our event loop, not in the edge's.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load_child",
        ctx.stack.ws_url,
        str(streams),
        str(min(MAX_SECTION_TOKENS, math.ceil(config.rate * 130))),
        str(ramp_s_for(streams)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        started = json.loads(await asyncio.wait_for(child.stdout.readline(), STARTUP_S) or b"{}")
        if not started.get("flowing"):
            ctx.say("handshake: the load streams got no token; measuring anyway")
        window_start = time.time()
        for repeat in range(config.handshake_repeats):
            ctx.say(f"handshake: under load, repeat {repeat + 1}/{config.handshake_repeats}")
            edge_loaded.append(
                await sequential(edge_port, config.handshakes, f"hs-load-{repeat}", failures)
            )
        window_end = time.time()
        ctx.say("handshake: collecting the load's relay delays")
        child.stdin.write(f"window {window_start} {window_end}\n".encode())
        report = json.loads(await asyncio.wait_for(child.stdout.readline(), CHILD_EXIT_S) or b"{}")
    finally:
        if child.returncode is None:
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), CHILD_EXIT_S)
            except TimeoutError:
                child.kill()
                # Bounded too: asyncio's wait also waits for the pipes to close.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.wait(), CHILD_EXIT_S)
    delays_ms = report.get("delay_ms") or describe([], scale=1000)
    ended_early = bool(report.get("ended_early"))
    return {
        "edge_idle_ms": repeated(edge_idle, scale=1000),
        "bare_idle_ms": repeated(bare_idle, scale=1000),
        "edge_under_load_ms": repeated(edge_loaded, scale=1000),
        "load": {
            "streams": streams,
            "rate": config.rate,
            "relay_delay_ms_during_handshakes": delays_ms,
            "streams_ended_inside_window": ended_early,
        },
        "failures": dict(failures),
    }
