"""The benchmark harness runs end to end (quick mode, one cheap scenario, real processes) and
writes results of the documented shape. No timing is asserted: speed belongs to `make bench`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import stop_popen

ROOT = Path(__file__).resolve().parents[1]


def run_bench(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """`python -m bench.run` in its own process group. Past `timeout_s` it gets SIGTERM, which
    it answers by stopping what it started; SIGKILL (to the whole group) only after that."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_popen(process, timeout=30)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"bench.run still running after {timeout_s:g} s:\n{stdout[-3000:]}{stderr[-3000:]}"
        ) from None
    finally:
        stop_popen(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.timeout(400)
def test_quick_handshake_run_writes_results_of_the_documented_shape(tmp_path: Path) -> None:
    finished = run_bench(
        [
            "--quick", "--only", "handshake", "--handshakes", "50",
            "--results-dir", str(tmp_path), "--no-docs",
        ],
        # A bound, not a timing: the quick run takes ~30 s on an idle 2-core machine.
        timeout_s=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    latest = json.loads((tmp_path / "latest.json").read_text())
    stamped = [p for p in tmp_path.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1 and json.loads(stamped[0].read_text()) == latest

    assert latest["schema"] == 1 and latest["mode"] == "quick"
    machine = latest["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["python"]
    assert machine["packages"]["aiohttp"] and machine["packages"]["grpcio"]
    assert set(latest["load_average"]) == {"start", "end"}

    handshake = latest["scenarios"]["handshake"]
    assert "error" not in handshake
    assert handshake["failures"] == {}
    for key in ("edge_idle_ms", "bare_idle_ms", "edge_under_load_ms"):
        series = handshake[key]
        assert series["pooled"]["n"] == 50
        assert series["repeats"] == len(series["per_repeat"]) == 1
        medians = series["median_of_repeats"]
        assert 0 < medians["p50"] <= medians["p95"] <= medians["p99"]
    assert handshake["load"]["streams"] > 0
    assert handshake["load"]["relay_delay_ms_during_handshakes"]["n"] > 0

    goals = {goal["goal"]: goal for goal in latest["goals"]}
    assert (
        goals["Handshake p95, idle"]["value"]
        == handshake["edge_idle_ms"]["median_of_repeats"]["p95"]
    )
    assert all({"goal", "target", "value", "unit", "met"} <= set(g) for g in latest["goals"])
    assert "| Handshake, idle" in latest["markdown"]
    assert "Handshake, idle" in finished.stdout
