"""Child processes for tests that need a process boundary (signals, a second edge, a kill).

Every child starts in its own session (`start_new_session`), so it and anything it forks form
one process group: `stop_process` ends the whole group, SIGTERM first, SIGKILL after a grace.
A helper that starts a child and then fails stops that child before raising. Whatever slips
through is caught by the session guard in tests/conftest.py (`leftover_processes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[2]

# Set in os.environ by tests/conftest.py: every process the suite starts inherits it (no DOCGEN_
# prefix, so the helpers that drop the caller's DOCGEN_* settings keep it), so the end-of-session
# guard finds them, orphans included, and no other pytest session's processes.
SESSION_MARKER = "PYTEST_DOCGEN_SESSION"
# Which test was being set up or run when a process started, for the guard's message.
STARTED_BY = "PYTEST_DOCGEN_STARTED_BY"

STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """True if the group still had a member to signal."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member became a zombie of another parent; nothing to do
        return False
    return True


def group_alive(pgid: int) -> bool:
    return _signal_group(pgid, signal.Signals(0))


async def spawn(*argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """`asyncio.create_subprocess_exec` in a new session, so `stop_process` can end the group."""
    return await asyncio.create_subprocess_exec(*argv, start_new_session=True, **kwargs)


async def stop_process(process: asyncio.subprocess.Process, timeout: float = STOP_GRACE_S) -> int:
    """SIGTERM to the child's process group, SIGKILL to it after `timeout`; returns the child's
    exit code. Grandchildren still in the group after the child exited are killed too."""
    pgid = process.pid  # the leader of its own session (see `spawn`)
    if process.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            _signal_group(pgid, signal.SIGKILL)
            await process.wait()
    _signal_group(pgid, signal.SIGKILL)
    return process.returncode if process.returncode is not None else -1


def stop_popen(process: subprocess.Popen[Any], timeout: float = STOP_GRACE_S) -> int:
    """`stop_process` for a `subprocess.Popen` started with `start_new_session=True`."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    _signal_group(process.pid, signal.SIGKILL)
    return process.returncode


def kill_popen(process: subprocess.Popen[Any]) -> None:
    """SIGKILL to the whole group at once (a crash, on purpose); waits for the child."""
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


async def _stderr_tail(process: asyncio.subprocess.Process) -> str:
    if process.stderr is None:
        return ""
    with contextlib.suppress(TimeoutError):
        return (await asyncio.wait_for(process.stderr.read(), 5)).decode(errors="replace")[-2000:]
    return ""


async def start_edge_process(
    generator_addr: str, *, port: int | None = None, **env: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = port or free_port()
    process = await spawn(
        sys.executable,
        "-m",
        "services.edge",
        cwd=ROOT,
        env={
            **os.environ,
            "DOCGEN_EDGE_PORT": str(port),
            "DOCGEN_GENERATOR_ADDR": generator_addr,
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # Generous: on a busy 2-core machine a cold Python + gRPC import can take seconds.
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            return process, port
                if process.returncode is not None or time.monotonic() > deadline:
                    await stop_process(process)
                    raise RuntimeError(f"edge process did not start: {await _stderr_tail(process)}")
                await asyncio.sleep(0.05)
    except BaseException:
        await stop_process(process)
        raise


async def wait_grpc_serving(address: str, timeout: float = 60.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not become SERVING")
            await asyncio.sleep(0.05)


async def start_grpc_service(module: str, address: str, **env: str) -> asyncio.subprocess.Process:
    """Starts `python -m services.<module>` with its stderr (JSON logs) piped."""
    variable = {"summary": "DOCGEN_SUMMARY_ADDR", "generator": "DOCGEN_GENERATOR_ADDR"}[module]
    process = await spawn(
        sys.executable,
        "-m",
        f"services.{module}",
        cwd=ROOT,
        env={**os.environ, variable: address, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_grpc_serving(address)
    except TimeoutError:
        await stop_process(process)
        raise RuntimeError(f"{module} did not start: {await _stderr_tail(process)}") from None
    except BaseException:
        await stop_process(process)
        raise
    return process


async def start_all(stack: contextlib.AsyncExitStack, *starts: Any) -> list[Any]:
    """Runs process-starting coroutines side by side; each one that succeeds is registered on
    `stack` for stopping (its result: a process, or a `(process, port)` pair) before the first
    failure, if any, is raised, so a half-started group leaves nothing behind."""
    results = await asyncio.gather(*starts, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            continue
        process = result[0] if isinstance(result, tuple) else result
        stack.push_async_callback(stop_process, process)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


def session_leftovers(session_id: str) -> list[psutil.Process]:
    """Live processes (not zombies) that carry this pytest session's marker, except ourselves."""
    me = os.getpid()
    found: list[psutil.Process] = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == me:
            continue
        try:
            if process.environ().get(SESSION_MARKER) != session_id:
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        found.append(process)
    return found


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:200]}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"pid {process.pid}"
