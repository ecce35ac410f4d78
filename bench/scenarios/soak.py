"""Soak: `soak_streams` concurrent 30 tokens/s streams, window after window with fresh runs
and sockets, for `soak_s`: every window's p99, errors and flow, and each process's RSS after
the first window (warm: imports, caches, pools) against after the last. Passes with no error,
every token flowing, RSS growth ≤ 10 % per process and the last window's p99 within 2× the
first's."""

from __future__ import annotations

import time
from typing import Any

from bench.load import measure_edge_streams, quiesce
from bench.scenarios import Context

MAX_RSS_GROWTH = 0.10
MAX_P99_DRIFT = 2.0


async def run(ctx: Context) -> dict[str, Any]:
    config = ctx.config
    assert ctx.stack is not None
    services = ctx.stamping_processes()
    measured = {n: s for n, s in services.items() if n != "stamping llm"}
    streams, window_s = config.soak_streams, config.soak_window_s
    started = time.monotonic()
    windows: list[dict[str, Any]] = []
    rss_warm: dict[str, int] = {}
    rss_start = {name: s.rss_bytes() for name, s in measured.items()}
    while not windows or time.monotonic() - started + window_s + 4 <= config.soak_s:
        result = await measure_edge_streams(
            ctx.stack.ws_url, services, streams=streams, rate=config.rate, measure_s=window_s
        )
        summary = result.summary()
        windows.append(
            {
                "at_s": round(time.monotonic() - started, 1),
                "p50_ms": summary["delay_ms"]["p50"],
                "p99_ms": summary["delay_ms"]["p99"],
                "flow": result.flow(config.rate),
                "errors": summary["errors"],
                "outcomes": summary["outcomes"],
                "cpu": summary["cpu"],
                "rss_mib": {n: round(s.rss_bytes() / 2**20, 1) for n, s in measured.items()},
            }
        )
        if len(windows) == 1:
            rss_warm = {name: s.rss_bytes() for name, s in measured.items()}
        ctx.say(
            f"soak: window {len(windows)} at {windows[-1]['at_s']:.0f} s: p99 "
            f"{windows[-1]['p99_ms']} ms, flow {windows[-1]['flow']:.2f}, "
            f"errors {windows[-1]['errors'] or 'none'}"
        )
        ctx.stack.check_alive()
    rss_end = {name: s.rss_bytes() for name, s in measured.items()}
    growth = {
        name: round(rss_end[name] / rss_warm[name] - 1, 4) if rss_warm.get(name) else None
        for name in measured
    }
    first, last = windows[0]["p99_ms"], windows[-1]["p99_ms"]
    errors = sum(sum(w["errors"].values()) for w in windows)
    stable = first is not None and last is not None and last <= MAX_P99_DRIFT * max(first, 1.0)
    passed = (
        errors == 0
        and all(w["flow"] >= 0.9 for w in windows)
        and all(g is not None and g <= MAX_RSS_GROWTH for g in growth.values())
        and stable
    )
    await quiesce(services, max_wait_s=30)
    return {
        "streams": streams,
        "rate": config.rate,
        "window_s": window_s,
        "duration_s": round(time.monotonic() - started, 1),
        "windows": windows,
        "errors": errors,
        "rss_mib_start": {n: round(v / 2**20, 1) for n, v in rss_start.items()},
        "rss_mib_warm": {n: round(v / 2**20, 1) for n, v in rss_warm.items()},
        "rss_mib_end": {n: round(v / 2**20, 1) for n, v in rss_end.items()},
        "rss_growth": growth,
        "p99_first_last_ms": [first, last],
        "p99_max_ms": max((w["p99_ms"] or 0) for w in windows),
        "passed": passed,
    }
