"""The processes a benchmark measures: summary, generator and edge started exactly as in
production (`python -m services.<name>`), an LLM (the bundled llama.cpp server or the stamping
one), each on a free loopback port, with its log in a file and a psutil handle for CPU and RSS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
BENCH_JWT_SECRET = "docgen-bench-secret-0123456789abcdef-0123456789"
START_TIMEOUT_S = 60.0


class ProcessFailed(RuntimeError):
    """A benchmark process did not start, or died."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss_bytes(self) -> int:
        return int(self.ps.memory_info().rss)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise ProcessFailed(
                f"{self.name} exited with code {self.process.returncode}; its log ends:\n"
                + self.log_tail()
            )

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the process group (see `spawn`), SIGKILL to it after `timeout_s`."""
        if self.process.returncode is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                _signal_group(self.pid, signal.SIGKILL)
                await self.process.wait()
        # Anything the process left behind in its group goes with it.
        _signal_group(self.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.asynccontextmanager
async def stopped_on_failure(service: ServiceProcess) -> AsyncIterator[ServiceProcess]:
    """Waiting for a service that fails (or is cancelled) stops it before the error goes on."""
    try:
        yield service
    except BaseException:
        await service.stop()
        raise


async def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> ServiceProcess:
    log_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once per process start
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            # Its own process group, stopped whole by `ServiceProcess.stop`.
            start_new_session=True,
        )
    return ServiceProcess(name, process, log_path)


async def wait_http_ok(
    service: ServiceProcess, url: str, timeout_s: float = START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            service.check_alive()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{service.name}: {url} not OK after {timeout_s:g} s:\n{service.log_tail()}"
                )
            await asyncio.sleep(0.1)


async def wait_grpc_serving(
    service: ServiceProcess, address: str, timeout_s: float = START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            service.check_alive()
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{service.name} not SERVING after {timeout_s:g} s:\n{service.log_tail()}"
                )
            await asyncio.sleep(0.1)


def base_env() -> dict[str, str]:
    """The environment of every bench process: the caller's, less any docgen setting (the bench
    measures the defaults, apart from what it sets explicitly)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCGEN_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["DOCGEN_JWT_SECRET"] = BENCH_JWT_SECRET
    return env


# --- LLMs ---------------------------------------------------------------------------------


@dataclass
class LLMProcess:
    service: ServiceProcess
    base_url: str
    model: str


async def start_stamping_llm(log_dir: Path, *, tokens_per_s: float) -> LLMProcess:
    port = free_port()
    service = await spawn(
        "stamping-llm",
        [
            sys.executable,
            "-m",
            "bench.stamping_llm",
            "--port",
            str(port),
            "--tokens-per-s",
            f"{tokens_per_s:g}",
        ],
        base_env(),
        log_dir,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    async with stopped_on_failure(service):
        await wait_http_ok(service, f"{base_url}/models")
    return LLMProcess(service, base_url, "stamping")


async def start_bundled_llm(log_dir: Path) -> LLMProcess:
    """The bundled llama.cpp server, with the command line `make run` uses."""
    from services.generator.settings import BUNDLED_LLM_MODEL
    from services.local_llm import LocalLLMSettings, server_command

    settings = LocalLLMSettings(port=free_port())
    service = await spawn("llama", server_command(settings), base_env(), log_dir)
    async with stopped_on_failure(service):
        await wait_http_ok(service, f"{settings.base_url}/models", timeout_s=120)
    return LLMProcess(service, settings.base_url, BUNDLED_LLM_MODEL)


def end_of_sequence_bias() -> dict[str, int]:
    """`logit_bias` that forbids the bundled model's special tokens (end of sequence, end and
    start of a chat turn), so every section runs to `max_tokens`. Token ids are read from the
    GGUF's vocabulary, not hard-coded."""
    from llama_cpp import Llama

    from services.local_llm import bundled_model_path

    vocab = Llama(str(bundled_model_path()), vocab_only=True, verbose=False)
    ids = {vocab.token_eos()}
    for special in ("<|im_end|>", "<|endoftext|>", "<|im_start|>"):
        tokens = vocab.tokenize(special.encode(), add_bos=False, special=True)
        if len(tokens) == 1:
            ids.add(tokens[0])
    return {str(token): -100 for token in sorted(ids)}


# --- the docgen services ------------------------------------------------------------------


@dataclass
class DocgenStack:
    """summary + generator + edge as child processes, wired to one LLM."""

    summary: ServiceProcess
    generator: ServiceProcess
    edge: ServiceProcess
    edge_port: int
    generator_addr: str
    log_dir: Path
    extra_edges: list[ServiceProcess] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.edge_port}/v1/ws"

    def services(self) -> dict[str, ServiceProcess]:
        return {"edge": self.edge, "generator": self.generator, "summary": self.summary}

    def check_alive(self) -> None:
        for service in (self.summary, self.generator, self.edge):
            service.check_alive()

    async def start_extra_edge(self, name: str) -> tuple[ServiceProcess, int]:
        """Another edge on the same generator (a fresh process, e.g. for memory)."""
        port = free_port()
        edge = await spawn(
            name,
            [sys.executable, "-m", "services.edge"],
            edge_env(port, self.generator_addr),
            self.log_dir,
        )
        async with stopped_on_failure(edge):
            await wait_http_ok(edge, f"http://127.0.0.1:{port}/healthz")
        self.extra_edges.append(edge)
        return edge, port

    async def stop(self) -> None:
        for service in (*self.extra_edges, self.edge, self.generator, self.summary):
            await service.stop()


def edge_env(port: int, generator_addr: str) -> dict[str, str]:
    return {
        **base_env(),
        "DOCGEN_EDGE_PORT": str(port),
        "DOCGEN_GENERATOR_ADDR": generator_addr,
        # The bench opens thousands of sockets from one IP, each user its own `sub`.
        "DOCGEN_WS_MAX_SOCKETS_PER_IP": "0",
        "DOCGEN_WS_MAX_SOCKETS_PER_USER": "0",
        # Several bench edges run at once: none takes the default metrics port 9100.
        "DOCGEN_EDGE_METRICS_PORT": "0",
    }


def generator_environment(llm: LLMProcess, address: str, summary_addr: str) -> dict[str, str]:
    return {
        **base_env(),
        "DOCGEN_GENERATOR_ADDR": address,
        "DOCGEN_SUMMARY_ADDR": summary_addr,
        "DOCGEN_LLM_BASE_URL": llm.base_url,
        "DOCGEN_LLM_MODEL": llm.model,
        "DOCGEN_GENERATOR_METRICS_PORT": "0",
        # Every bench stream is its own user; this only guards against a bench bug.
        "DOCGEN_MAX_RUNS_PER_USER": "100000",
        # Runs of abandoned streams end soon and finished runs leave memory soon, so one
        # scenario does not weigh on the next, and the soak's windows (~25 s each) do not
        # overlap: with 20 s, a window's 200 runs were still held while the next window's
        # were written, a high-water mark the soak's RSS growth (+14 % on 29 Nov) included.
        # The bench never resumes a run.
        "DOCGEN_RUN_GRACE_S": "2",
        "DOCGEN_RUN_TTL_S": "5",
    }


async def start_docgen(
    llm: LLMProcess,
    log_dir: Path,
    *,
    generator_env: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> DocgenStack:
    """`env`: added to every service's environment (e.g. `DOCGEN_EVENT_LOOP` for a
    comparison)."""
    env = env or {}
    summary_addr = f"127.0.0.1:{free_port()}"
    generator_addr = f"127.0.0.1:{free_port()}"
    edge_port = free_port()
    summary = await spawn(
        "summary",
        [sys.executable, "-m", "services.summary"],
        {
            **base_env(),
            "DOCGEN_SUMMARY_ADDR": summary_addr,
            "DOCGEN_SUMMARY_METRICS_PORT": "0",
            **env,
        },
        log_dir,
    )
    generator = edge = None
    try:
        await wait_grpc_serving(summary, summary_addr)
        extra = {
            k: json.dumps(v) if isinstance(v, dict) else str(v)
            for k, v in (generator_env or {}).items()
        }
        generator = await spawn(
            "generator",
            [sys.executable, "-m", "services.generator"],
            {**generator_environment(llm, generator_addr, summary_addr), **extra, **env},
            log_dir,
        )
        await wait_grpc_serving(generator, generator_addr)
        edge = await spawn(
            "edge",
            [sys.executable, "-m", "services.edge"],
            {**edge_env(edge_port, generator_addr), **env},
            log_dir,
        )
        await wait_http_ok(edge, f"http://127.0.0.1:{edge_port}/readyz")
    except BaseException:
        for service in (edge, generator, summary):
            if service is not None:
                await service.stop()
        raise
    return DocgenStack(summary, generator, edge, edge_port, generator_addr, log_dir)


async def start_bare_ws(log_dir: Path, name: str = "bare-ws") -> tuple[ServiceProcess, int]:
    """The bare aiohttp + pyjwt WebSocket endpoint (bench/bare_ws.py): the handshake and
    memory baseline."""
    port = free_port()
    service = await spawn(
        name, [sys.executable, "-m", "bench.bare_ws", "--port", str(port)], base_env(), log_dir
    )
    async with stopped_on_failure(service):
        await wait_http_ok(service, f"http://127.0.0.1:{port}/healthz")
    return service, port


# --- several processes of each service on one host (docs/operations.md, "Several cores") --


async def start_redis(log_dir: Path, name: str = "redis") -> tuple[ServiceProcess, str]:
    """A throwaway redis-server (no persistence) for a shared run log; returns its URL."""
    port = free_port()
    service = await spawn(
        name,
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        base_env(),
        log_dir,
    )  # fmt: skip
    async with stopped_on_failure(service):
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            service.check_alive()
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            if time.monotonic() > deadline:
                raise ProcessFailed(f"redis-server not listening after {START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.1)
    return service, f"redis://127.0.0.1:{port}/0"


@dataclass
class ScaledStack:
    """`count` edges sharing one port (SO_REUSEPORT) and `count` generators, each edge dialling
    every generator (round robin), one summary service; the generators share a Redis run log,
    or (runlog "memory") keep their runs to themselves (a run is then followed only through
    the stream that started it: enough for the bench, not for `resume`)."""

    edges: list[ServiceProcess]
    generators: list[ServiceProcess]
    others: list[ServiceProcess]
    """The summary service and Redis."""
    edge_port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.edge_port}/v1/ws"

    def services(self) -> dict[str, ServiceProcess]:
        named = {s.name: s for s in (*self.edges, *self.generators, *self.others)}
        return named

    def check_alive(self) -> None:
        for service in self.services().values():
            service.check_alive()

    async def stop(self) -> None:
        for service in (*self.edges, *self.generators, *self.others):
            await service.stop()


async def start_scaled_docgen(
    llm: LLMProcess, log_dir: Path, count: int, *, runlog: str = "redis"
) -> ScaledStack:
    started: list[ServiceProcess] = []
    runlog_env: dict[str, str] = {}
    try:
        if runlog == "redis":
            redis, runlog_url = await start_redis(log_dir)
            started.append(redis)
            runlog_env["DOCGEN_RUNLOG_URL"] = runlog_url
        summary_addr = f"127.0.0.1:{free_port()}"
        summary = await spawn(
            "summary-x",
            [sys.executable, "-m", "services.summary"],
            {**base_env(), "DOCGEN_SUMMARY_ADDR": summary_addr, "DOCGEN_SUMMARY_METRICS_PORT": "0"},
            log_dir,
        )
        started.append(summary)
        await wait_grpc_serving(summary, summary_addr)
        generator_addrs = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        generators = []
        for index, address in enumerate(generator_addrs, 1):
            generator = await spawn(
                f"generator-{index}",
                [sys.executable, "-m", "services.generator"],
                {**generator_environment(llm, address, summary_addr), **runlog_env},
                log_dir,
            )
            started.append(generator)
            generators.append(generator)
        for generator, address in zip(generators, generator_addrs, strict=True):
            await wait_grpc_serving(generator, address)
        edge_port = free_port()
        edges = []
        for index in range(1, count + 1):
            edge = await spawn(
                f"edge-{index}",
                [sys.executable, "-m", "services.edge"],
                {
                    **edge_env(edge_port, ",".join(generator_addrs)),
                    "DOCGEN_EDGE_REUSE_PORT": "1",
                },
                log_dir,
            )
            started.append(edge)
            edges.append(edge)
            await wait_http_ok(edge, f"http://127.0.0.1:{edge_port}/readyz")
    except BaseException:
        for service in reversed(started):
            await service.stop()
        raise
    return ScaledStack(
        edges, generators, [s for s in started if s.name in ("summary-x", "redis")], edge_port
    )
