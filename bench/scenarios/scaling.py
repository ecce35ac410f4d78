"""Several cores: the capacity of two edges (one port, SO_REUSEPORT) and two generators
(edges dialling both round robin) against the capacity of one of each, measured by the
capacity scenario in the same run: the ratio is how the relay scales from 1 to 2 processes
per service on this machine (docs/operations.md, "Several cores on one host").

The capacity search runs with the generators on their own memory logs (what the relay costs
per token); then one probe at the single pair's capacity with the generators on a shared Redis
run log (the documented recipe, which `resume` through any process needs) shows what the
shared log adds."""

from __future__ import annotations

from typing import Any

from bench.load import measure_edge_streams, quiesce
from bench.processes import start_scaled_docgen
from bench.scenarios import Context
from bench.scenarios.capacity import MIN_FLOW, search

PROCESSES = 2


async def run(ctx: Context) -> dict[str, Any]:
    assert ctx.stamping is not None and ctx.stack is not None
    config = ctx.config
    single = (ctx.results.get("capacity") or {}).get("streams")
    ctx.say(f"scaling: {PROCESSES} edges and {PROCESSES} generators (memory run logs)")
    stack = await start_scaled_docgen(
        ctx.stamping, ctx.log_dir / "scaled-memory", PROCESSES, runlog="memory"
    )
    try:
        await _warm_up(
            ctx, stack.ws_url, {**stack.services(), "stamping llm": ctx.stamping.service}
        )
        result = await search(
            ctx,
            ws_url=stack.ws_url,
            services={**stack.services(), "stamping llm": ctx.stamping.service},
            bounds=(0, None),
            label=f"scaling ({PROCESSES}+{PROCESSES} processes)",
            budget_s=config.scaling_budget_s,
            # The single pair's capacity first: doubling goes on from there if it passes.
            first_probe=single or None,
        )
    finally:
        await stack.stop()
    redis_probe: dict[str, Any] | None = None
    if single and config.scaling_redis_probe:
        ctx.say(f"scaling: {PROCESSES}+{PROCESSES} processes on a Redis run log, {single} streams")
        stack = await start_scaled_docgen(
            ctx.stamping, ctx.log_dir / "scaled-redis", PROCESSES, runlog="redis"
        )
        try:
            services = {**stack.services(), "stamping llm": ctx.stamping.service}
            await _warm_up(ctx, stack.ws_url, services)
            probe = await measure_edge_streams(
                stack.ws_url,
                services,
                streams=single,
                rate=config.rate,
                measure_s=config.capacity_measure_s,
            )
            summary = probe.summary()
            redis_probe = {
                "streams": single,
                "p50_ms": summary["delay_ms"]["p50"],
                "p99_ms": summary["delay_ms"]["p99"],
                "flow": probe.flow(config.rate),
                "errors": summary["errors"],
                "cpu": summary["cpu"],
                "passed": (summary["delay_ms"]["p99"] or 1e9) <= config.capacity_goal_p99_ms
                and probe.flow(config.rate) >= MIN_FLOW
                and not probe.errors,
            }
            await quiesce(services, max_wait_s=10)
        finally:
            await stack.stop()
    scaled = result["streams"]
    return {
        "processes": PROCESSES,
        "single_streams": single,
        "scaled_streams": scaled,
        "ratio": round(scaled / single, 2) if single and scaled else None,
        "search": result,
        "redis_probe": redis_probe,
    }


async def _warm_up(ctx: Context, ws_url: str, services: dict[str, Any]) -> None:
    """A few unmeasured runs through fresh processes: each generator's first run loads the
    language detector and opens its LLM connections, which would cost the first probe."""
    await measure_edge_streams(
        ws_url, services, streams=4 * PROCESSES, rate=ctx.config.rate, measure_s=1.0
    )
    await quiesce(services, max_wait_s=10)
