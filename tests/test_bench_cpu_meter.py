"""The bench's CPU accounting splits a process's CPU by thread, so the CPU py-spy cannot see
(gRPC's C-core threads) shows up in the table."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psutil
import uvloop

from bench.load import CpuMeter
from bench.report import _threads_cell
from bench.wakeups import cpu_per_wakeup


def test_cpu_per_token_is_split_by_thread_name() -> None:
    meter = CpuMeter({"me": cast(Any, SimpleNamespace(ps=psutil.Process()))}, include_client=False)
    named, stop = threading.Event(), threading.Event()

    def spin() -> None:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("spinner")
        named.set()
        while not stop.is_set():
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert named.wait(10)
        meter.start()
        time.sleep(0.3)  # the main thread idles while the spinner burns CPU
        report = meter.stop(tokens=1000)["me"]
    finally:
        stop.set()
        worker.join()

    by_thread = report["threads_us_per_token"]
    assert next(iter(by_thread)) == "spinner", by_thread  # largest first
    assert by_thread["spinner"] > by_thread.get("main", 0.0)
    # Most of the process's CPU is charged to the spinner. Not all, and the split does not add
    # up exactly: the kernel reports the process's and each thread's CPU separately, each
    # adjusted to stay monotonic (330 µs split against 380 µs total was seen).
    assert by_thread["spinner"] >= 0.5 * report["us_per_token"], (by_thread, report)


def test_the_report_names_each_process_busiest_threads() -> None:
    cpu = {
        "edge": {"threads_us_per_token": {"main": 120.0, "default-executo": 9.4, "x": 1.0}},
        "generator": {"threads_us_per_token": {"main": 150.0, "grpc_global_tim": 60.2}},
    }
    cell = _threads_cell(cpu, ("edge", "generator"), top=2)
    assert cell == "edge: main 120, default-executo 9; generator: main 150, grpc_global_tim 60"


def test_the_wakeup_probe_wakes_at_its_rate_and_charges_cpu_to_each() -> None:
    wakeups, cpu_s = uvloop.run(cpu_per_wakeup(100, 0.3))
    # Late wake-ups catch up (no sleep when behind), so the count follows the clock.
    assert 28 <= wakeups <= 31, wakeups
    assert 0 < cpu_s < 0.01
