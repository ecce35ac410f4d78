"""docgen services as real child processes, for tests that need a process boundary
(signals, a second edge, a kill)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_edge_process(
    generator_addr: str, *, port: int | None = None, **env: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = port or free_port()
    process = await asyncio.create_subprocess_exec(
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
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return process, port
            except aiohttp.ClientError:
                pass
            if process.returncode is not None or time.monotonic() > deadline:
                stderr = await process.stderr.read() if process.stderr else b""
                raise RuntimeError(f"edge process did not start: {stderr.decode()[-2000:]}")
            await asyncio.sleep(0.05)


async def stop_process(process: asyncio.subprocess.Process, timeout: float = 10.0) -> int:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode if process.returncode is not None else -1


async def wait_grpc_serving(address: str, timeout: float = 20.0) -> None:
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
    process = await asyncio.create_subprocess_exec(
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
        process.kill()
        stderr = await process.stderr.read() if process.stderr else b""
        raise RuntimeError(f"{module} did not start: {stderr.decode()[-2000:]}") from None
    return process
