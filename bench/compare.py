"""Before/after in one sitting: several docgen stacks (code trees or settings) against one
stamping LLM, measured in turn round after round at the same stream count; prints and writes
the CPU per delivered token of edge and generator, the relay delay and the share of tokens
delivered, per round and as medians.

    python -m bench.compare STREAMS ROUNDS NAME:KEY=VALUE,... [NAME:...]

A variant's `ROOT=<tree>` runs that tree's services (e.g. `git archive <commit>` unpacked, with
its stubs generated into `<tree>/gen`); other KEY=VALUE pairs are environment variables:

    python -m bench.compare 100 3 before:ROOT=/tmp/before asyncio:DOCGEN_EVENT_LOOP=asyncio now:
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import bench.processes as bp
from bench.load import measure_edge_streams, quiesce

MEASURE_S = 8.0


def parse(args: list[str]) -> dict[str, dict[str, str]]:
    variants = {}
    for arg in args:
        name, _, spec = arg.partition(":")
        variants[name] = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
    return variants


async def compare(streams: int, rounds: int, variants: dict[str, dict[str, str]]) -> dict[str, Any]:
    log = bp.ROOT / "bench" / "results" / "compare"
    llm = await bp.start_stamping_llm(log, tokens_per_s=30)
    stacks = {}
    home = bp.ROOT
    try:
        for name, spec in variants.items():
            env = dict(spec)
            root = env.pop("ROOT", None)
            if root:
                bp.ROOT = Path(root)
                env["PYTHONPATH"] = f"{root}:{root}/gen"
            try:
                stacks[name] = await bp.start_docgen(llm, log / name, env=env)
            finally:
                bp.ROOT = home
        for stack in stacks.values():  # first runs load the language detector, open connections
            services = {**stack.services(), "stamping llm": llm.service}
            await measure_edge_streams(stack.ws_url, services, streams=8, rate=30, measure_s=1)
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for round_ in range(rounds):
            for name, stack in stacks.items():
                services = {**stack.services(), "stamping llm": llm.service}
                await quiesce(services)
                result = await measure_edge_streams(
                    stack.ws_url, services, streams=streams, rate=30, measure_s=MEASURE_S
                )
                summary = result.summary()
                row = {
                    "edge_us": summary["cpu"]["edge"]["us_per_token"],
                    "generator_us": summary["cpu"]["generator"]["us_per_token"],
                    "p50_ms": summary["delay_ms"]["p50"],
                    "p99_ms": summary["delay_ms"]["p99"],
                    "flow": result.flow(30),
                    "edge_threads_us": summary["cpu"]["edge"]["threads_us_per_token"],
                    "generator_threads_us": summary["cpu"]["generator"]["threads_us_per_token"],
                }
                rows[name].append(row)
                print(round_, name, row, flush=True)
        medians = {
            name: {
                k: statistics.median(r[k] for r in runs if r[k] is not None)
                for k in runs[0]
                if not k.endswith("_threads_us")  # per round only
            }
            for name, runs in rows.items()
        }
        return {"streams": streams, "rounds": rows, "median": medians}
    finally:
        for stack in stacks.values():
            await stack.stop()
        await llm.service.stop()


def main() -> None:
    streams, rounds = int(sys.argv[1]), int(sys.argv[2])
    result = asyncio.run(compare(streams, rounds, parse(sys.argv[3:])))
    for name, median in result["median"].items():
        print("median", name, median)
    out = bp.ROOT / "bench" / "results" / f"compare-{streams}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
