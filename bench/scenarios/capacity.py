"""Capacity: the largest number of concurrent 30 tokens/s streams whose relay p99 stays within
the goal (100 ms) with every token flowing; doubling from what the relay scenario already
showed, then bisecting, within a wall-clock budget. `capacity_coalesced` does the same with
`generate.options.chunk_interval_ms` (the goal grows by the interval: a held delta waits up
to one interval by design)."""

from __future__ import annotations

import time
from typing import Any

from bench.load import measure_edge_streams, quiesce
from bench.processes import ServiceProcess
from bench.scenarios import Context

# Probes stop when the bracket is this tight (streams), or relatively tighter than this.
RESOLUTION = 10
RELATIVE_RESOLUTION = 0.1
MIN_FLOW = 0.9
"""A probe also fails when fewer than this share of the expected tokens arrived in the window
(streams that never started would otherwise look fast)."""


def _known_bounds(ctx: Context, goal_ms: float) -> tuple[int, int | None]:
    low, high = 0, None
    relay = ctx.results.get("relay") or {}
    for level in (relay.get("levels") or {}).values():
        p99 = level["edge"]["delay_ms"]["median_of_repeats"]["p99"]
        streams = level["streams"]
        if p99 is not None and p99 <= goal_ms:
            low = max(low, streams)
        elif high is None or streams < high:
            high = streams
    if high is not None and low >= high:
        low = 0
    return low, high


async def run(ctx: Context) -> dict[str, Any]:
    assert ctx.stack is not None
    return await search(
        ctx,
        ws_url=ctx.stack.ws_url,
        services=ctx.stamping_processes(),
        bounds=_known_bounds(ctx, ctx.config.capacity_goal_p99_ms),
        label="capacity",
    )


async def run_coalesced(ctx: Context) -> dict[str, Any]:
    """Capacity with `chunk_interval_ms`, starting from the per-delta capacity (at least as
    many streams fit when each carries fewer, larger chunks)."""
    assert ctx.stack is not None
    interval = ctx.config.coalesced_interval_ms
    per_delta = (ctx.results.get("capacity") or {}).get("streams") or 0
    return await search(
        ctx,
        ws_url=ctx.stack.ws_url,
        services=ctx.stamping_processes(),
        bounds=(per_delta, None),
        label="capacity (coalesced)",
        chunk_interval_ms=interval,
        goal_ms=ctx.config.capacity_goal_p99_ms + interval,
    )


async def search(
    ctx: Context,
    *,
    ws_url: str,
    services: dict[str, ServiceProcess],
    bounds: tuple[int, int | None],
    label: str,
    chunk_interval_ms: int = 0,
    goal_ms: float | None = None,
    budget_s: float | None = None,
    first_probe: int | None = None,
) -> dict[str, Any]:
    """Doubles from `bounds` (passes, fails or None) until a probe fails, then bisects;
    `first_probe`: a stream count probed before anything else."""
    config = ctx.config
    goal = config.capacity_goal_p99_ms if goal_ms is None else goal_ms
    budget = config.capacity_budget_s if budget_s is None else budget_s
    low, high = bounds
    started = time.monotonic()
    probes: list[dict[str, Any]] = []

    def next_probe() -> int | None:
        if first_probe and not probes:
            return first_probe
        if high is None:
            candidate = max(50, low * 2)
            return candidate if candidate <= config.capacity_max_streams else None
        if high - low <= max(RESOLUTION, low * RELATIVE_RESOLUTION):
            return None
        return (low + high) // 2

    budget_exhausted = False
    while (streams := next_probe()) is not None:
        if time.monotonic() - started > budget:
            budget_exhausted = True
            break
        ctx.say(f"{label}: probing {streams} streams (known: passes {low}, fails {high})")
        result = await measure_edge_streams(
            ws_url,
            services,
            streams=streams,
            rate=config.rate,
            measure_s=config.capacity_measure_s,
            chunk_interval_ms=chunk_interval_ms,
        )
        summary = result.summary()
        flow = result.flow(config.rate)
        p99 = summary["delay_ms"]["p99"]
        passed = p99 is not None and p99 <= goal and flow >= MIN_FLOW and not result.errors
        probes.append(
            {
                "streams": streams,
                "passed": passed,
                "p50_ms": summary["delay_ms"]["p50"],
                "p99_ms": p99,
                "flow": round(flow, 3),
                "errors": summary["errors"],
                "cpu": summary["cpu"],
            }
        )
        ctx.say(
            f"{label}: {streams} streams -> p99 {p99} ms, flow {flow:.2f}: "
            + ("pass" if passed else "fail")
        )
        if passed:
            low = streams
        else:
            high = streams
        await quiesce(services, max_wait_s=30)
        for service in services.values():
            service.check_alive()
    return {
        "goal_p99_ms": goal,
        "rate": config.rate,
        "chunk_interval_ms": chunk_interval_ms,
        "streams": low,
        "first_failing": high,
        "probes": probes,
        "budget_s": budget,
        "budget_exhausted": budget_exhausted,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
