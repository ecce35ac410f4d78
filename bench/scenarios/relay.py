"""Relay overhead: concurrent 30 tokens/s streams from the stamping LLM, each token's
receive − send measured by the client, through the edge and (the no-hop baseline) read
directly from the LLM; interleaved repeat by repeat, CPU per process over each window."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from bench.load import (
    CpuMeter,
    LoadResult,
    largest_first,
    measure_direct_streams,
    measure_edge_streams,
    quiesce,
)
from bench.scenarios import Context
from bench.stats import repeated

IDLE_S = 3.0


def cpu_medians(results: list[LoadResult]) -> dict[str, Any]:
    """Per process, the median over repeats of cores used and CPU µs per relayed token."""
    names = results[0].cpu.keys() if results else []
    medians: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {}
        for key in ("cores", "us_per_token"):
            values = [r.cpu[name][key] for r in results if r.cpu[name][key] is not None]
            entry[key] = round(statistics.median(values), 3) if values else None
        threads = [r.cpu[name].get("threads_us_per_token") or {} for r in results]
        names_seen = dict.fromkeys(t for by_thread in threads for t in by_thread)
        by_thread = {
            t: round(statistics.median(b.get(t, 0.0) for b in threads), 1) for t in names_seen
        }
        entry["threads_us_per_token"] = largest_first(by_thread)
        medians[name] = entry
    return medians


def level_summary(results: list[LoadResult], rate: float) -> dict[str, Any]:
    return {
        "delay_ms": repeated([r.delays_s for r in results], scale=1000),
        "flow": statistics.median(r.flow(rate) for r in results) if results else None,
        "cpu": cpu_medians(results),
        "tokens_in_windows": sum(len(r.delays_s) for r in results),
        "windows": [r.summary() | {"delay_ms": None} for r in results],
    }


def _p50_p99(summary: dict[str, Any]) -> str:
    medians = summary["delay_ms"]["median_of_repeats"]
    return f"{medians['p50']}/{medians['p99']}"


async def run(ctx: Context) -> dict[str, Any]:
    config = ctx.config
    assert ctx.stack is not None and ctx.stamping is not None
    services = ctx.stamping_processes()
    # What the processes burn with nothing to do (heartbeats, timers, pollers): at one stream
    # this is most of the CPU per token.
    await quiesce(services)
    idle = CpuMeter(services, include_client=False)
    idle.start()
    await asyncio.sleep(IDLE_S)
    idle_cores = {name: entry["cores"] for name, entry in idle.stop(0).items()}
    levels: dict[str, Any] = {}
    for streams in config.relay_levels:
        measure_s = config.measure_s(streams)
        edge_results: list[LoadResult] = []
        direct_results: list[LoadResult] = []
        repeats = config.repeats(streams)
        for repeat in range(repeats):
            ctx.say(f"relay: {streams} streams, repeat {repeat + 1}/{repeats}, through the edge")
            edge_results.append(
                await measure_edge_streams(
                    ctx.stack.ws_url,
                    services,
                    streams=streams,
                    rate=config.rate,
                    measure_s=measure_s,
                )
            )
            await quiesce(services)
            ctx.stack.check_alive()
            ctx.say(f"relay: {streams} streams, repeat {repeat + 1}/{repeats}, direct")
            direct_results.append(
                await measure_direct_streams(
                    ctx.stamping.base_url,
                    ctx.stamping.model,
                    {"stamping llm": ctx.stamping.service},
                    streams=streams,
                    rate=config.rate,
                    measure_s=measure_s,
                )
            )
            await quiesce(services)
        edge = level_summary(edge_results, config.rate)
        direct = level_summary(direct_results, config.rate)
        levels[str(streams)] = {
            "streams": streams,
            "measure_s": measure_s,
            "edge": edge,
            "direct": direct,
        }
        ctx.say(
            f"relay: {streams} streams: p50/p99 edge {_p50_p99(edge)} ms, "
            f"direct {_p50_p99(direct)} ms"
        )
    return {"rate": config.rate, "idle_cores": idle_cores, "levels": levels}
