"""Runs the whole docgen stack on one machine for `make run`: starts the bundled LLM, summary,
generator and edge as child processes in order, waits for each to be healthy, stops them all."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.defaults import (
    BUNDLED_LLM_MODEL,
    EDGE_HOST,
    EDGE_PORT,
    GENERATOR_ADDR,
    SUMMARY_ADDR,
    ws_url,
)
from services.common.env import ConfigError, env_float, env_int, env_opt, env_str
from services.common.grpc_client import channel
from services.common.grpc_tls import GrpcTls, PeerAuth
from services.edge.auth import dev_token
from services.local_llm import LocalLLMSettings, LocalLLMUnavailable, server_command

TAIL_LINES = 20
BANNER_SETTLE_S = 0.3
POLL_S = 0.1
PROBE_TIMEOUT_S = 1.0
# Lines longer than this are cut into pieces rather than failing the reader.
LINE_LIMIT = 1 << 20
REPO_ROOT = Path(__file__).resolve().parent.parent
# The CLI's default edge (clients/cli.py); any other address goes on the printed command line.
CLI_DEFAULT_URL = ws_url()


class StackError(Exception):
    """The stack cannot (keep) running; the message says which service and why."""


Probe = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    listen: tuple[str, int]
    """Address the service binds, checked to be free before anything starts."""
    probe: Probe
    probe_label: str
    """What `probe` checks, for error messages."""


@dataclass
class Child:
    spec: ServiceSpec
    process: asyncio.subprocess.Process
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    pump: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class StackSettings:
    edge_host: str = EDGE_HOST
    """`DOCGEN_EDGE_HOST`, as the edge reads it."""
    edge_port: int = EDGE_PORT
    """`DOCGEN_EDGE_PORT`, as the edge reads it."""
    generator_addr: str = GENERATOR_ADDR
    """`DOCGEN_GENERATOR_ADDR`, as the generator reads it."""
    summary_addr: str = SUMMARY_ADDR
    """`DOCGEN_SUMMARY_ADDR`, as the summary service reads it."""
    llm_base_url: str | None = None
    """`DOCGEN_LLM_BASE_URL`; when unset the bundled model is started."""
    planner_url: str | None = None
    """`DOCGEN_PLANNER_URL`; when unset the development planner is started and used."""
    dev_planner_addr: str = "127.0.0.1:8090"
    """`DOCGEN_DEV_PLANNER_ADDR`, as the development planner reads it."""
    ready_timeout_s: float = 60.0
    """How long each service may take to become healthy (`DOCGEN_STACK_READY_TIMEOUT_S`)."""
    stop_timeout_s: float = 12.0
    """How long each service gets to exit after SIGTERM before SIGKILL
    (`DOCGEN_STACK_STOP_TIMEOUT_S`); above the generator's 10 s shutdown grace."""

    @classmethod
    def from_env(cls) -> StackSettings:
        return cls(
            edge_host=env_str("DOCGEN_EDGE_HOST", cls.edge_host),
            edge_port=env_int("DOCGEN_EDGE_PORT", cls.edge_port, minimum=1),
            generator_addr=env_str("DOCGEN_GENERATOR_ADDR", cls.generator_addr),
            summary_addr=env_str("DOCGEN_SUMMARY_ADDR", cls.summary_addr),
            llm_base_url=env_opt("DOCGEN_LLM_BASE_URL"),
            planner_url=env_opt("DOCGEN_PLANNER_URL"),
            dev_planner_addr=env_str("DOCGEN_DEV_PLANNER_ADDR", cls.dev_planner_addr),
            ready_timeout_s=env_float(
                "DOCGEN_STACK_READY_TIMEOUT_S", cls.ready_timeout_s, minimum=1
            ),
            stop_timeout_s=env_float(
                "DOCGEN_STACK_STOP_TIMEOUT_S", cls.stop_timeout_s, minimum=0.1
            ),
        )


def say(message: str, *, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    print(f"[stack] {message}", file=stream, flush=True)


def split_address(name: str, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{name}={address!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def dial_host(host: str) -> str:
    # A wildcard listen address is reached through loopback.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def check_port_free(service: str, host: str, port: int) -> None:
    """Fails with a clear message when something already listens on the service's port.

    gRPC servers bind with SO_REUSEPORT, so a stale generator would otherwise share the port
    silently with the new one; SO_REUSEADDR here still lets TIME_WAIT leftovers pass."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise StackError(
                    f"port {port} on {host} is already in use, so the {service} cannot start; "
                    f"stop whatever listens there (`ss -ltnp 'sport = :{port}'` shows it) or "
                    f"choose another port"
                ) from None
            raise StackError(f"the {service} cannot listen on {host}:{port}: {error}") from None


def http_probe(url: str) -> Probe:
    async def probe() -> bool:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url) as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    return probe


def grpc_health_probe(address: str) -> Probe:
    # The services' own channel factory and settings, so a stack run with gRPC TLS (and a
    # service token) set in the environment is probed the way the services dial each other.
    tls, auth = GrpcTls.from_env(), PeerAuth.from_env()

    async def probe() -> bool:
        async with channel(address, tls, auth) as grpc_channel:
            stub = health_pb2_grpc.HealthStub(grpc_channel)
            try:
                answer = await stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_S
                )
            except grpc.aio.AioRpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    return probe


def on_terminal() -> bool:
    """A person watches stdout: human-readable logs, quiet model output, banner on Enter."""
    return sys.stdout.isatty() and os.environ.get("DOCGEN_LOG_FORMAT", "").lower() != "json"


def dev_planner_url(settings: StackSettings) -> str | None:
    """The development planner's URL when the stack starts it (no DOCGEN_PLANNER_URL)."""
    if settings.planner_url is not None:
        return None
    host, port = split_address("DOCGEN_DEV_PLANNER_ADDR", settings.dev_planner_addr)
    return f"http://{dial_host(host)}:{port}"


def child_env(llm: LocalLLMSettings | None, planner_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Children's logs reach the terminal as they happen, not in 8 KB blocks.
    env["PYTHONUNBUFFERED"] = "1"
    # Children write into a pipe, so by themselves they would choose JSON logs.
    if on_terminal():
        env.setdefault("DOCGEN_LOG_FORMAT", "text")
    if llm is not None:
        env["DOCGEN_LLM_BASE_URL"] = llm.base_url
        env["DOCGEN_LLM_MODEL"] = BUNDLED_LLM_MODEL
    if planner_url is not None:
        env["DOCGEN_PLANNER_URL"] = planner_url
    return env


def build_specs(settings: StackSettings, llm: LocalLLMSettings | None) -> list[ServiceSpec]:
    python = sys.executable
    specs: list[ServiceSpec] = []
    if llm is not None:
        models_url = f"{llm.base_url}/models"
        specs.append(
            ServiceSpec(
                "llm",
                server_command(llm),
                (llm.host, llm.port),
                http_probe(models_url),
                f"GET {models_url}",
            )
        )
    planner_url = dev_planner_url(settings)
    if planner_url is not None:
        # Before the generator, which reads plans from it (docs/planner.md).
        specs.append(
            ServiceSpec(
                "planner",
                [python, "-m", "services.dev_planner"],
                split_address("DOCGEN_DEV_PLANNER_ADDR", settings.dev_planner_addr),
                http_probe(f"{planner_url}/healthz"),
                f"GET {planner_url}/healthz",
            )
        )
    for name, variable, address in (
        ("summary", "DOCGEN_SUMMARY_ADDR", settings.summary_addr),
        ("generator", "DOCGEN_GENERATOR_ADDR", settings.generator_addr),
    ):
        host, port = split_address(variable, address)
        dial = f"{dial_host(host)}:{port}"
        specs.append(
            ServiceSpec(
                name,
                [python, "-m", f"services.{name}"],
                (host, port),
                grpc_health_probe(dial),
                f"gRPC health check on {dial}",
            )
        )
    readyz = f"http://{dial_host(settings.edge_host)}:{settings.edge_port}/readyz"
    specs.append(
        ServiceSpec(
            "edge",
            [python, "-m", "services.edge"],
            (settings.edge_host, settings.edge_port),
            http_probe(readyz),
            f"GET {readyz}",
        )
    )
    return specs


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def example_outline() -> str:
    outlines = sorted((REPO_ROOT / "examples" / "outlines").glob("*.json"))
    return (
        f"examples/outlines/{outlines[0].name}" if outlines else "examples/outlines/<outline>.json"
    )


def example_document_id() -> str:
    """A `document_id` the development planner serves (examples/outlines)."""
    outlines = sorted((REPO_ROOT / "examples" / "outlines").glob("*.json"))
    if not outlines:
        return "<document_id>"
    return str(json.loads(outlines[0].read_text(encoding="utf-8"))["document_id"])


def banner(settings: StackSettings, elapsed_s: float) -> str:
    host = dial_host(settings.edge_host)
    # In the fragment, the token never reaches the server's logs or a Referer header.
    token = dev_token("dev")
    cli = f".venv/bin/docgen generate {example_outline()}"
    by_id = f".venv/bin/docgen generate --plan {example_document_id()}"
    edge_url = ws_url(host, settings.edge_port)
    if edge_url != CLI_DEFAULT_URL:
        cli += f" --url {edge_url}"
        by_id += f" --url {edge_url}"
    return "\n".join(
        [
            f"[stack] all services ready in {elapsed_s:.1f} s",
            "",
            f"  open     http://{host}:{settings.edge_port}/#token={token}",
            f"  or run   {cli}",
            f"  by id    {by_id}   (docs/planner.md)",
            "  stop     Ctrl-C" + ("    (Enter shows this again)" if on_terminal() else ""),
            "",
        ]
    )


class Supervisor:
    """Owns the child processes: starts them in order, watches them, stops them in reverse."""

    def __init__(
        self, settings: StackSettings, specs: list[ServiceSpec], env: dict[str, str]
    ) -> None:
        self._settings = settings
        self._specs = specs
        self._env = env
        self._children: list[Child] = []
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        self._started_at = time.monotonic()
        self._ready_after_s: float | None = None
        self._quiet = {"llm"} if on_terminal() else set()
        """Children whose output is kept only for the failure report (llama.cpp prints
        ~100 lines at start and several per request)."""

    def show_banner(self) -> None:
        if self._ready_after_s is not None:
            print(banner(self._settings, self._ready_after_s), flush=True)

    def on_enter(self) -> None:
        """stdin is the terminal: a line (Enter) prints the banner again, EOF stops listening."""
        try:
            data = os.read(sys.stdin.fileno(), 1024)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            return
        self.show_banner()

    def request_stop(self, signame: str) -> None:
        if self._stop_requested.is_set():
            say(f"{signame} again: killing everything now")
            self._hurry.set()
            return
        say(f"{signame} received: stopping everything")
        self._stop_requested.set()

    async def run(self) -> int:
        """Starts the stack and watches it; returns the exit code. Children are stopped by
        `stop_all`, which the caller runs whatever happens here."""
        self._started_at = time.monotonic()
        for spec in self._specs:
            check_port_free(spec.name, *spec.listen)
        for spec in self._specs:
            child = await self._spawn(spec)
            if not await self._wait_ready(child):
                return 0
        # Let the children's start-up lines reach the terminal first: the banner comes last.
        self._ready_after_s = time.monotonic() - self._started_at
        await asyncio.sleep(BANNER_SETTLE_S)
        self.show_banner()
        return await self._watch()

    async def _spawn(self, spec: ServiceSpec) -> Child:
        # Own session and process group: the terminal's Ctrl-C reaches only the supervisor,
        # which stops the children in order, and a signal to the group reaches grandchildren.
        process = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env,
            cwd=REPO_ROOT,
            start_new_session=True,
            limit=LINE_LIMIT,
        )
        child = Child(spec, process)
        child.pump = asyncio.create_task(self._pump(child))
        self._children.append(child)
        say(f"started {spec.name} (pid {process.pid}), waiting for {spec.probe_label}")
        if spec.name in self._quiet:
            say(f"{spec.name} output is shown only if it fails (DOCGEN_LOG_FORMAT=json shows it)")
        return child

    async def _pump(self, child: Child) -> None:
        stream = child.process.stdout
        assert stream is not None
        prefix = f"[{child.name}] "
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line beyond LINE_LIMIT: take what is buffered
                raw = await stream.read(LINE_LIMIT)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            child.tail.append(line)
            if child.name in self._quiet:
                continue
            # A closed terminal pipe must not stop the draining, or the child blocks on write.
            with contextlib.suppress(BrokenPipeError):
                sys.stdout.write(prefix + line + "\n")
                sys.stdout.flush()

    def _exited(self) -> Child | None:
        return next((c for c in self._children if c.process.returncode is not None), None)

    async def _wait_ready(self, child: Child) -> bool:
        """True once the child is healthy, False if a stop was requested meanwhile."""
        deadline = time.monotonic() + self._settings.ready_timeout_s
        while not self._stop_requested.is_set():
            dead = self._exited()
            if dead is not None:
                raise StackError(await self._exit_report(dead, before_ready=dead is child))
            if await child.spec.probe():
                say(f"{child.name} is ready")
                return True
            if time.monotonic() > deadline:
                raise StackError(
                    f"{child.name} did not become ready within {self._settings.ready_timeout_s:g}"
                    f" s ({child.spec.probe_label} never succeeded); its last log lines:\n"
                    + self._format_tail(child)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), POLL_S)
        return False

    async def _watch(self) -> int:
        waits = {asyncio.create_task(c.process.wait()): c for c in self._children}
        stop = asyncio.create_task(self._stop_requested.wait())
        try:
            done, _ = await asyncio.wait([stop, *waits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [stop, *waits]:
                task.cancel()
        exited = [waits[t] for t in done if t in waits]
        if exited:
            raise StackError(await self._exit_report(exited[0], before_ready=False))
        return 0

    async def _exit_report(self, child: Child, *, before_ready: bool) -> str:
        # Let the pump drain what the child printed last (bounded: a grandchild may hold the pipe).
        if child.pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.pump), 1.0)
        code = child.process.returncode
        assert code is not None
        when = " before it was ready" if before_ready else ""
        report = f"{child.name} {describe_exit(code)}{when}; stopping everything"
        if before_ready:
            report += "\nits last log lines:\n" + self._format_tail(child)
        return report

    @staticmethod
    def _format_tail(child: Child) -> str:
        lines = list(child.tail) or ["(no output)"]
        return "\n".join(f"    [{child.name}] {line}" for line in lines)

    async def stop_all(self) -> None:
        """SIGTERM each child's process group in reverse start order, SIGKILL after the
        timeout; the edge goes first so clients are told to reconnect before runs end."""
        for child in reversed(self._children):
            await self._stop_child(child)
        for child in self._children:
            if child.pump is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.pump, 1.0)

    async def _stop_child(self, child: Child) -> None:
        process = child.process
        if process.returncode is None:
            self._signal_group(process.pid, signal.SIGTERM)
            wait = asyncio.create_task(process.wait())
            hurry = asyncio.create_task(self._hurry.wait())
            await asyncio.wait(
                [wait, hurry],
                timeout=self._settings.stop_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            hurry.cancel()
            if process.returncode is None:
                if not self._hurry.is_set():
                    timeout = self._settings.stop_timeout_s
                    say(f"{child.name} did not stop within {timeout:g} s; killing it")
                self._signal_group(process.pid, signal.SIGKILL)
                await wait
            code = process.returncode or 0
            # Exiting through the default SIGTERM/SIGINT action after a clean shutdown (uvicorn
            # re-raises the signal) is an ordinary stop, not worth a remark.
            clean = code in (0, -signal.SIGTERM, -signal.SIGINT)
            say(f"{child.name} stopped" + ("" if clean else f" ({describe_exit(code)})"))
        # Whatever the child started and left behind in its group goes too.
        self._signal_group(process.pid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


async def main_async() -> int:
    try:
        settings = StackSettings.from_env()
        llm = LocalLLMSettings.from_env() if settings.llm_base_url is None else None
        specs = build_specs(settings, llm)
    except (ConfigError, LocalLLMUnavailable) as error:
        say(str(error), error=True)
        return 2
    if llm is None:
        say(f"LLM: {settings.llm_base_url} (DOCGEN_LLM_BASE_URL), so the bundled one stays off")
    supervisor = Supervisor(settings, specs, child_env(llm, dev_planner_url(settings)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, supervisor.request_stop, sig.name)
    if on_terminal() and sys.stdin.isatty():
        loop.add_reader(sys.stdin.fileno(), supervisor.on_enter)
    try:
        return await supervisor.run()
    except StackError as error:
        say(str(error), error=True)
        return 1
    finally:
        await supervisor.stop_all()


def main() -> None:
    sys.exit(asyncio.run(main_async()))


if __name__ == "__main__":
    main()
