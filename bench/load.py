"""Concurrent 30 tokens/s streams through the edge (or straight from the stamping LLM), the
measurement window over them, and CPU accounting per process."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.lean import LeanWebSocket, lean_completion, open_lean_websocket
from bench.processes import ServiceProcess
from bench.wsclient import RelaySamples, one_section_outline, token

CONNECT_CONCURRENCY = 64
SETTLE_S = 1.0
"""After the last run started, before the window opens: every stream is past its first token."""
TAIL_S = 1.5
"""Tokens each stream still has after the window closes, so none ends inside it."""


def ramp_s_for(streams: int) -> float:
    """Run starts are spread over this long: a burst of StartRun calls is not what is measured."""
    return min(2.0, 0.004 * streams)


def tokens_for(rate: float, streams: int, measure_s: float) -> int:
    return math.ceil(rate * (ramp_s_for(streams) + SETTLE_S + measure_s + TAIL_S))


class CpuMeter:
    """CPU seconds of named processes (and of this client) between two snapshots."""

    def __init__(
        self, processes: dict[str, ServiceProcess], *, include_client: bool = True
    ) -> None:
        self._ps: dict[str, psutil.Process] = {name: p.ps for name, p in processes.items()}
        if include_client:
            self._ps["bench client"] = psutil.Process()
        self._start: dict[str, float] = {}
        self._start_threads: dict[str, dict[int, float]] = {}
        self._started_at = 0.0

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    @staticmethod
    def _thread_cpu(process: psutil.Process) -> dict[int, float]:
        try:
            return {t.id: t.user_time + t.system_time for t in process.threads()}
        except psutil.Error:
            return {}

    @staticmethod
    def _thread_name(process: psutil.Process, tid: int) -> str:
        """The thread's kernel name: "main" for the asyncio loop's thread; gRPC's C-core
        threads name themselves (`grpc_global_tim`, `default-executo`, …); Python threads
        carry the interpreter's name."""
        if tid == process.pid:
            return "main"
        try:
            return Path(f"/proc/{process.pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            return "(ended)"

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._start = {name: self._cpu(p) for name, p in self._ps.items()}
        self._start_threads = {name: self._thread_cpu(p) for name, p in self._ps.items()}

    def stop(self, tokens: int) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started_at
        report: dict[str, Any] = {}
        for name, process in self._ps.items():
            seconds = self._cpu(process) - self._start[name]
            report[name] = {
                "cpu_s": round(seconds, 3),
                "cores": round(seconds / elapsed, 3) if elapsed else None,
                "us_per_token": round(seconds / tokens * 1e6, 1) if tokens else None,
                "threads_us_per_token": self._by_thread(name, process, tokens),
            }
        return report

    def _by_thread(self, name: str, process: psutil.Process, tokens: int) -> dict[str, float]:
        """CPU µs per token by thread name over the window, largest first (threads started
        inside it count from zero; threads that ended inside it are missing): psutil's process
        total includes threads py-spy never samples (gRPC's C-core threads)."""
        if not tokens:
            return {}
        before = self._start_threads.get(name, {})
        spent: dict[str, float] = {}
        for tid, seconds in self._thread_cpu(process).items():
            thread = self._thread_name(process, tid)
            spent[thread] = spent.get(thread, 0.0) + seconds - before.get(tid, 0.0)
        return largest_first(
            {thread: round(s / tokens * 1e6, 1) for thread, s in spent.items() if s > 0}
        )


def largest_first(values: dict[str, float]) -> dict[str, float]:
    """The same mapping, ordered by value, largest first."""
    return dict(sorted(values.items(), key=lambda item: item[1], reverse=True))


async def quiesce(
    processes: dict[str, ServiceProcess], *, below_cores: float = 0.1, max_wait_s: float = 20.0
) -> float:
    """Waits until the processes are idle again (a previous load's runs have wound down);
    returns how long that took."""
    started = time.monotonic()
    handles = [p.ps for p in processes.values()]
    previous = {p.pid: CpuMeter._cpu(p) for p in handles}
    while time.monotonic() - started < max_wait_s:
        await asyncio.sleep(0.5)
        current = {p.pid: CpuMeter._cpu(p) for p in handles}
        busy = sum(current[pid] - previous[pid] for pid in current) / 0.5
        previous = current
        if busy < below_cores:
            break
    return time.monotonic() - started


@dataclass
class LoadResult:
    streams: int
    window_s: float
    delays_s: list[float]
    cpu: dict[str, Any]
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    ended_inside_window: bool = False
    connect_s: float = 0.0

    def flow(self, rate: float) -> float:
        """Tokens the client received in the window over those the LLM sent in it: below 1,
        the relay falls behind (the rest is queued somewhere)."""
        expected = self.streams * rate * self.window_s
        return round(len(self.delays_s) / expected, 3) if expected else 0.0

    def summary(self) -> dict[str, Any]:
        from bench.stats import describe

        return {
            "streams": self.streams,
            "window_s": round(self.window_s, 2),
            "tokens_in_window": len(self.delays_s),
            "delay_ms": describe(self.delays_s, scale=1000),
            "cpu": self.cpu,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "ended_inside_window": self.ended_inside_window,
            "connect_s": round(self.connect_s, 2),
        }


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


class EdgeStreams:
    """`streams` sockets (lean clients, bench/lean.py), each following one single-section run
    on the stamping LLM; every stream is its own user."""

    def __init__(
        self, ws_url: str, streams: int, tokens: int, *, chunk_interval_ms: int = 0
    ) -> None:
        self.streams = streams
        self.tokens = tokens
        self._options = {"chunk_interval_ms": chunk_interval_ms} if chunk_interval_ms else None
        self.samples = RelaySamples()
        self.first_end_at: float | None = None
        self.connect_s = 0.0
        self._host, self._port = _host_port(ws_url)
        self._tag = secrets.token_hex(3)
        self._sockets: list[LeanWebSocket] = []
        self._tasks: list[asyncio.Task[str | None]] = []

    def _on_first_end(self) -> None:
        if self.first_end_at is None:
            self.first_end_at = time.time()

    async def start(self, ramp_s: float) -> float:
        """Connects every socket, then starts the runs spread over `ramp_s`; returns the unix
        time at which the last run was started."""
        started = time.monotonic()
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(index: int) -> LeanWebSocket:
            async with limit:
                return await open_lean_websocket(
                    self._host, self._port, token(f"bench-{self._tag}-{index}"),
                    self.samples, self._on_first_end,
                )  # fmt: skip

        self._sockets = list(await asyncio.gather(*(connect(i) for i in range(self.streams))))
        self.connect_s = time.monotonic() - started
        begin = time.time()

        async def one(index: int, sock: LeanWebSocket) -> str | None:
            await asyncio.sleep(index * ramp_s / max(1, self.streams))
            frame: dict[str, Any] = {
                "type": "generate",
                "outline": one_section_outline(index, self.tokens),
            }
            if self._options:
                frame["options"] = self._options
            sock.send_json(frame)
            return await sock.done

        self._tasks = [asyncio.create_task(one(i, s)) for i, s in enumerate(self._sockets)]
        await asyncio.sleep(ramp_s)
        return begin + ramp_s

    async def finish(self, timeout_s: float) -> tuple[Counter[str], Counter[str]]:
        """Waits up to `timeout_s` for the runs to end, then closes every socket (runs still
        going are cancelled by the generator after its grace period)."""
        done, pending = (
            await asyncio.wait(self._tasks, timeout=timeout_s) if self._tasks else (set(), set())
        )
        outcomes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for task in pending:
            task.cancel()
        for task in done:
            error = task.exception()
            outcomes[
                f"client error: {type(error).__name__}"
                if error
                else (task.result() or "socket closed")
            ] += 1
        if pending:
            outcomes["not finished (abandoned)"] += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
        for sock in self._sockets:
            errors.update(sock.errors)
            sock.close()
        return outcomes, errors


async def measure_edge_streams(
    ws_url: str,
    processes: dict[str, ServiceProcess],
    *,
    streams: int,
    rate: float,
    measure_s: float,
    finish_timeout_s: float = TAIL_S + 5.0,
    chunk_interval_ms: int = 0,
) -> LoadResult:
    ramp = ramp_s_for(streams)
    load = EdgeStreams(
        ws_url, streams, tokens_for(rate, streams, measure_s), chunk_interval_ms=chunk_interval_ms
    )
    meter = CpuMeter(processes)
    last_start = await load.start(ramp)
    window_start = last_start + SETTLE_S
    await asyncio.sleep(max(0.0, window_start - time.time()))
    meter.start()
    await asyncio.sleep(measure_s)
    window_end = time.time()
    delays = load.samples.window(window_start, window_end)
    cpu = meter.stop(len(delays))
    outcomes, errors = await load.finish(finish_timeout_s)
    ended_early = load.first_end_at is not None and load.first_end_at < window_end
    return LoadResult(
        streams,
        window_end - window_start,
        delays,
        cpu,
        outcomes,
        errors,
        ended_early,
        load.connect_s,
    )


async def measure_direct_streams(
    base_url: str,
    model: str,
    processes: dict[str, ServiceProcess],
    *,
    streams: int,
    rate: float,
    measure_s: float,
) -> LoadResult:
    """The no-hop baseline: the same streams read straight from the stamping LLM by a lean SSE
    reader (bench/lean.py), so what it shows is the LLM and the kernel, not a client library."""
    ramp = ramp_s_for(streams)
    tokens = tokens_for(rate, streams, measure_s)
    samples = RelaySamples()
    host, port = _host_port(base_url)
    first_end: list[float] = []

    async def one(index: int) -> None:
        await asyncio.sleep(index * ramp / max(1, streams))
        await lean_completion(host, port, model, tokens, samples)
        if not first_end:
            first_end.append(time.time())

    meter = CpuMeter(processes)
    begin = time.time()
    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    window_start = begin + ramp + SETTLE_S
    await asyncio.sleep(max(0.0, window_start - time.time()))
    meter.start()
    await asyncio.sleep(measure_s)
    window_end = time.time()
    delays = samples.window(window_start, window_end)
    cpu = meter.stop(len(delays))
    outcomes: Counter[str] = Counter()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        outcomes["completed" if result is None else f"client error: {type(result).__name__}"] += 1
    ended_early = bool(first_end) and first_end[0] < window_end
    return LoadResult(
        streams, window_end - window_start, delays, cpu, outcomes, Counter(), ended_early
    )
