"""Profile: py-spy samples the edge and the generator while streams run through them, and the
CPU each spends per relayed token is split by component (JSON, protobuf, gRPC, openai client,
aiohttp, event loop, docgen code). A separate load from the measured scenarios: sampling slows
the processes down."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench.load import SETTLE_S, CpuMeter, EdgeStreams, quiesce, ramp_s_for, tokens_for
from bench.profiling import attribute, read_collapsed, record
from bench.scenarios import Context

PROFILED = ("edge", "generator")


def py_spy_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.is_file() else shutil.which("py-spy")


def thread_times(process: psutil.Process) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in process.threads()}


def user_system(process: psutil.Process) -> tuple[float, float]:
    times = process.cpu_times()
    return float(times.user), float(times.system)


async def run(ctx: Context) -> dict[str, Any]:
    py_spy = py_spy_binary()
    if py_spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    levels = {}
    for streams in ctx.config.profile_streams:
        levels[str(streams)] = await profile_level(ctx, py_spy, streams)
    return {"rate": ctx.config.rate, "seconds": ctx.config.profile_s, "levels": levels}


async def profile_level(ctx: Context, py_spy: str, streams: int) -> dict[str, Any]:
    config = ctx.config
    assert ctx.stack is not None
    services = ctx.stamping_processes()
    seconds = config.profile_s
    ctx.say(f"profile: {streams} streams, py-spy on {', '.join(PROFILED)} for {seconds:g} s")
    load = EdgeStreams(ctx.stack.ws_url, streams, tokens_for(config.rate, streams, seconds + 2))
    last_start = await load.start(ramp_s_for(streams))
    await asyncio.sleep(max(0.0, last_start + SETTLE_S - time.time()))

    targets = {name: services[name] for name in PROFILED}
    meter = CpuMeter(targets, include_client=False)
    threads_before = {name: thread_times(p.ps) for name, p in targets.items()}
    split_before = {name: user_system(p.ps) for name, p in targets.items()}
    window_start = time.time()
    meter.start()
    outputs = {name: ctx.log_dir / f"py-spy-{name}-{streams}.txt" for name in PROFILED}
    native = True
    runs = await asyncio.gather(
        *(
            record(py_spy, targets[name].pid, seconds, outputs[name], native=True)
            for name in PROFILED
        )
    )
    if any(code != 0 for code, _ in runs):
        # Native unwinding is not available everywhere; Python frames alone still tell a lot.
        native = False
        runs = await asyncio.gather(
            *(
                record(py_spy, targets[name].pid, seconds, outputs[name], native=False)
                for name in PROFILED
            )
        )
    window_end = time.time()
    tokens = len(load.samples.window(window_start, window_end))
    cpu = meter.stop(tokens)
    await load.finish(timeout_s=15.0)
    await quiesce(services)

    processes: dict[str, Any] = {}
    for (name, service), (code, output) in zip(targets.items(), runs, strict=True):
        if code != 0:
            processes[name] = {"error": f"py-spy exited {code}: {output[-400:]}"}
            continue
        profile = attribute(read_collapsed(outputs[name]))
        us_per_token = cpu[name]["us_per_token"] or 0.0
        profile["us_per_token"] = us_per_token
        profile["component_us_per_token"] = {
            component: round(share * us_per_token, 1)
            for component, share in profile["components"].items()
        }
        after = thread_times(service.ps)
        before = threads_before[name]
        deltas = sorted(((after[t] - before.get(t, 0.0)) for t in after), reverse=True)
        busiest = deltas[0] if deltas else 0.0
        user_after, system_after = user_system(service.ps)
        user_before, system_before = split_before[name]
        user, system = user_after - user_before, system_after - system_before
        profile["cpu"] = cpu[name]
        profile["os_threads"] = {
            "count": len(after),
            "busiest_thread_share": round(busiest / sum(deltas), 3) if sum(deltas) else None,
        }
        profile["kernel_share"] = round(system / (user + system), 3) if user + system else None
        processes[name] = profile
    return {
        "streams": streams,
        "native_frames": native,
        "tokens_in_window": tokens,
        "processes": processes,
        "raw_profiles": {name: str(path) for name, path in outputs.items()},
    }
