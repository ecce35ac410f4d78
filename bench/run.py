"""`make bench`: runs the benchmark scenarios against real docgen processes on loopback, prints
the Markdown tables, writes bench/results/<time>.json and latest.json, and refreshes the
results section of docs/performance.md.

    python -m bench.run                 # the full suite (about 10 minutes on 2 quiet cores)
    python -m bench.run --quick         # every scenario at a small scale (~2 minutes)
    python -m bench.run --only relay,capacity
    python -m bench.run --render bench/results/latest.json --docs   # re-render, run nothing
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from bench import report
from bench.config import SCENARIOS, BenchConfig, quick_config
from bench.processes import (
    end_of_sequence_bias,
    start_bare_ws,
    start_bundled_llm,
    start_docgen,
    start_stamping_llm,
)
from bench.scenarios import (
    Context,
    capacity,
    handshake,
    k6,
    memory,
    profile,
    quality,
    relay,
    scaling,
    sections,
    soak,
    summary_fast,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STAMPING_SCENARIOS = (
    "handshake",
    "memory",
    "relay",
    "capacity",
    "capacity_coalesced",
    "soak",
    "k6",
    "profile",
    "scaling",
)
RUNNERS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "handshake": handshake.run,
    "memory": memory.run,
    "relay": relay.run,
    "capacity": capacity.run,
    "capacity_coalesced": capacity.run_coalesced,
    "soak": soak.run,
    "scaling": scaling.run,
    "k6": k6.run,
    "profile": profile.run,
    "sections": sections.run,
    "summary_fast": summary_fast.run,
    "quality": quality.run,
}
# Sockets: thousands of client sockets here, as many in the edge (which inherits the limit).
WANTED_FDS = 65536


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, WANTED_FDS))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Printer:
    def __init__(self) -> None:
        self._started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[bench +{time.monotonic() - self._started:6.1f}s] {message}", flush=True)


async def run_scenario(name: str, ctx: Context) -> dict[str, Any]:
    ctx.say(f"--- {name}")
    started = time.monotonic()
    try:
        result = await RUNNERS[name](ctx)
    except Exception as error:  # one broken scenario must not lose the others' numbers
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"[:2000]}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    ctx.results[name] = result
    ctx.say(
        f"{name} done in {result['elapsed_s']:.0f} s"
        + (f" (FAILED: {result['error'][:200]})" if "error" in result else "")
    )
    return result


async def run_all(config: BenchConfig, log_dir: Path, say: Printer) -> dict[str, Any]:
    ctx = Context(config=config, log_dir=log_dir, say=say)
    chosen = [s for s in SCENARIOS if s in config.scenarios]
    if "summary_fast" in chosen:
        await run_scenario("summary_fast", ctx)
    if any(s in chosen for s in STAMPING_SCENARIOS):
        stamping_dir = log_dir / "stamping"
        say(
            f"starting the stamping LLM ({config.rate:g} tokens/s) and docgen "
            f"(logs in {stamping_dir})"
        )
        ctx.stamping = await start_stamping_llm(stamping_dir, tokens_per_s=config.rate)
        try:
            ctx.stack = await start_docgen(ctx.stamping, stamping_dir)
            if "handshake" in chosen:
                ctx.bare = await start_bare_ws(stamping_dir)
            for name in STAMPING_SCENARIOS:
                if name in chosen:
                    await run_scenario(name, ctx)
        finally:
            if ctx.bare is not None:
                await ctx.bare[0].stop()
            if ctx.stack is not None:
                await ctx.stack.stop()
            await ctx.stamping.service.stop()
    if "sections" in chosen or "quality" in chosen:
        # One llama.cpp server for both: the sections scenario's forced length is a per-request
        # `logit_bias` (its docgen stack's DOCGEN_LLM_EXTRA_BODY), not a server setting.
        llama_dir = log_dir / "bundled-llm"
        say(f"starting the bundled llama.cpp server (logs in {llama_dir})")
        try:
            ctx.llama = await start_bundled_llm(llama_dir)
            if "sections" in chosen:
                await _run_sections(ctx, llama_dir)
            if "quality" in chosen:
                await run_scenario("quality", ctx)
        except Exception as error:
            traceback.print_exc()
            for name in ("sections", "quality"):
                if name in chosen and name not in ctx.results:
                    ctx.results[name] = {
                        "error": "could not start the bundled model: "
                        f"{type(error).__name__}: {error}"[:2000]
                    }
        finally:
            if ctx.llama is not None:
                await ctx.llama.service.stop()
                ctx.llama = None
    return {name: ctx.results[name] for name in SCENARIOS if name in ctx.results}


async def _run_sections(ctx: Context, llama_dir: Path) -> None:
    """The sections scenario, through its own docgen stack on the running llama.cpp server."""
    assert ctx.llama is not None
    ctx.llama_extra_body = {"logit_bias": end_of_sequence_bias()}
    ctx.llama_stack = await start_docgen(
        ctx.llama, llama_dir, generator_env={"DOCGEN_LLM_EXTRA_BODY": ctx.llama_extra_body}
    )
    try:
        await run_scenario("sections", ctx)
    finally:
        await ctx.llama_stack.stop()
        ctx.llama_stack = None


async def run_until_signal(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Runs `main`; SIGTERM, SIGINT or SIGHUP cancel it, so the `finally` blocks of `run_all`
    stop every process it started (a killed benchmark would orphan them)."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="every scenario at a small scale (~2 minutes)"
    )
    parser.add_argument("--only", help=f"comma-separated scenarios, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--handshakes", type=int, help="sequential handshakes per repeat")
    parser.add_argument(
        "--redis-probe",
        action="store_true",
        help="scaling: also probe 2 edges + 2 generators on a shared Redis run log",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: print the tables of an earlier run (with --docs: into the docs too)",
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument(
        "--docs", dest="docs", action="store_true", default=None, help="update docs/performance.md"
    )
    docs.add_argument(
        "--no-docs", dest="docs", action="store_false", help="leave docs/performance.md alone"
    )
    return parser.parse_args(argv)


def render_only(path: Path, write_docs: bool) -> int:
    result = json.loads(path.read_text())
    whole = result["mode"] == "full" and tuple(result["config"]["scenarios"]) == SCENARIOS
    result["goals"] = report.goals(result["scenarios"], result["duration_s"] if whole else None)
    markdown = report.render(result)
    print(markdown)
    if write_docs and not report.update_docs(markdown):
        print(f"{report.DOCS} or its markers are missing: not updated", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render_only(args.render, bool(args.docs))
    config = quick_config() if args.quick else BenchConfig()
    if args.only:
        chosen = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = [s for s in chosen if s not in SCENARIOS]
        if unknown:
            print(
                f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
                file=sys.stderr,
            )
            return 2
        config = dataclasses.replace(config, scenarios=chosen)
    if args.handshakes:
        config = dataclasses.replace(config, handshakes=args.handshakes)
    if args.redis_probe:
        config = dataclasses.replace(config, scaling_redis_probe=True)
    # By default only a full run of every scenario speaks for the project in the docs.
    write_docs = (
        args.docs
        if args.docs is not None
        else (config.mode == "full" and config.scenarios == SCENARIOS)
    )

    say = Printer()
    fds = raise_fd_limit()
    started_at = datetime.datetime.now(datetime.UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    log_dir = args.results_dir / "logs" / stamp
    say(
        f"{config.mode} run of {', '.join(config.scenarios)}; open-file limit {fds}; "
        f"logs in {log_dir}"
    )
    load_start = os.getloadavg()[0]
    began = time.monotonic()
    try:
        scenarios = asyncio.run(run_until_signal(run_all(config, log_dir, say)))
    except (asyncio.CancelledError, KeyboardInterrupt):
        say("stopped by a signal; every process the benchmark started has been stopped")
        return 130
    result: dict[str, Any] = {
        "schema": 1,
        "started_at": started_at.isoformat(timespec="seconds"),
        "mode": config.mode,
        "duration_s": round(time.monotonic() - began, 1),
        "machine": report.machine_info(),
        "load_average": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "config": config.as_dict(),
        "scenarios": scenarios,
    }
    # The run's duration is a goal of a full run of every scenario only.
    whole = config.mode == "full" and config.scenarios == SCENARIOS
    result["goals"] = report.goals(scenarios, result["duration_s"] if whole else None)
    markdown = report.render(result)
    result["markdown"] = markdown
    path, latest = report.write_json(result, args.results_dir, stamp)
    print()
    print(markdown)
    print()
    say(f"results: {path} (and {latest.name})")
    if write_docs:
        if report.update_docs(markdown):
            say(f"updated {report.DOCS.relative_to(report.ROOT)}")
        else:
            say(f"{report.DOCS} or its markers are missing: not updated")
    if "quality" in scenarios and "error" not in scenarios["quality"] and args.docs is not False:
        # Any quality run over every example outline speaks for the project's text quality.
        if config.mode == "full" and quality.update_docs(scenarios["quality"], result):
            say(f"updated {quality.DOCS.relative_to(report.ROOT)}")
    failed = [name for name, s in scenarios.items() if "error" in s]
    if failed:
        say(f"scenarios that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
