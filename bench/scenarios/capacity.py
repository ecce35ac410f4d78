"""Capacity: the largest number of concurrent 30 tokens/s streams whose relay p99 stays within
the goal (100 ms) with every token flowing; doubling from what the relay scenario already
showed, then bisecting, within a wall-clock budget."""

from __future__ import annotations

import time
from typing import Any

from bench.load import measure_edge_streams, quiesce
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
    config = ctx.config
    assert ctx.stack is not None
    services = ctx.stamping_processes()
    goal = config.capacity_goal_p99_ms
    low, high = _known_bounds(ctx, goal)
    started = time.monotonic()
    probes: list[dict[str, Any]] = []

    def next_probe() -> int | None:
        if high is None:
            candidate = max(50, low * 2)
            return candidate if candidate <= config.capacity_max_streams else None
        if high - low <= max(RESOLUTION, low * RELATIVE_RESOLUTION):
            return None
        return (low + high) // 2

    budget_exhausted = False
    while (streams := next_probe()) is not None:
        if time.monotonic() - started > config.capacity_budget_s:
            budget_exhausted = True
            break
        ctx.say(f"capacity: probing {streams} streams (known: passes {low}, fails {high})")
        result = await measure_edge_streams(
            ctx.stack.ws_url,
            services,
            streams=streams,
            rate=config.rate,
            measure_s=config.capacity_measure_s,
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
            f"capacity: {streams} streams -> p99 {p99} ms, flow {flow:.2f}: "
            + ("pass" if passed else "fail")
        )
        if passed:
            low = streams
        else:
            high = streams
        await quiesce(services, max_wait_s=30)
        ctx.stack.check_alive()
    return {
        "goal_p99_ms": goal,
        "rate": config.rate,
        "streams": low,
        "first_failing": high,
        "probes": probes,
        "budget_s": config.capacity_budget_s,
        "budget_exhausted": budget_exhausted,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
