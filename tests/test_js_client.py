"""The JavaScript client (clients/js/) under Node against a real edge process: its own tests
(`node --test clients/js/test/`) drive whole runs, an edge killed with SIGKILL mid-run and
started again, refused tokens, an in-band token refresh and a generate re-sent after a drop.
This side runs the stack (scripted LLM, summary and generator in process, the edge as a child
process) and a small control server the Node tests call to mint tokens and kill the edge.
Also: the frame types generated from schemas/ are current, and the typed example compiles."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web

from services.edge.settings import DEV_JWT_SECRET
from tests.support.http import serve_on_free_port
from tests.support.node import ensure_npm_packages
from tests.support.processes import start_edge_process, stop_process
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import Stack, start_stack
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "js"
TOKEN_DELAY_S = 0.02

# What the scripted LLM writes for each section title the Node tests use; non-ASCII on purpose,
# so the UTF-8 bytes behind `text_sha256` are checked too.
TEXTS = {
    "Why compost": "Compost turns kitchen scraps into soil. It halves the bin — voilà, less waste.",
    "Choosing a bin": "A worm bin suits a flat. Bokashi ferments scraps. Both are cheap.",
    "A weekly routine": "Add greens and browns. Keep it damp. Stir weekly, naïve or not ✓.",
    "Fixing problems": "Fruit flies mean too much fruit. A smell means too wet: add cardboard.",
}


def section_script(number: int, body: dict[str, Any]) -> Reply:
    prompt = body["messages"][-1]["content"]
    for title, text in TEXTS.items():
        if f'"{title}"' in prompt:
            return Reply(tokens=words(text), token_delay_s=TOKEN_DELAY_S)
    raise AssertionError(f"prompt names no known section: {prompt[:300]}")


@pytest.fixture(scope="module")
def node_and_packages() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed (`apt-get install nodejs npm`)", pytrace=False)
    ensure_npm_packages(PACKAGE, npm, timeout_s=300)
    return node


@dataclass
class EdgeProcess:
    generator_addr: str
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    kills: int = 0

    async def start(self) -> None:
        # Leeway 0: a token's expiry is exact, so the refresh test need not wait 30 s more.
        self.process, self.port = await start_edge_process(
            self.generator_addr, port=self.port or None, DOCGEN_JWT_LEEWAY_S="0"
        )

    async def crash_and_restart(self) -> None:
        """SIGKILL (no close frame, no drain: the client sees 1006), then the same port."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        self.kills += 1
        await self.start()

    async def stop(self) -> None:
        if self.process is not None:
            await stop_process(self.process)


def control_app(stack: Stack, edge: EdgeProcess, proxy: TcpProxy) -> web.Application:
    async def token(request: web.Request) -> web.Response:
        sub = request.query.get("sub", "alice")
        ttl = float(request.query.get("ttl_s", "3600"))
        secret = "not-the-secret-" * 3 if request.query.get("bad") else DEV_JWT_SECRET
        now = time.time()
        claims = {"sub": sub, "aud": "docgen", "iat": int(now), "exp": int(now + ttl)}
        return web.Response(text=jwt.encode(claims, secret, algorithm="HS256"))

    async def expected(_request: web.Request) -> web.Response:
        return web.json_response(TEXTS)

    async def crash_edge(_request: web.Request) -> web.Response:
        await edge.crash_and_restart()
        return web.json_response({"kills": edge.kills, "port": edge.port})

    async def llm_requests(_request: web.Request) -> web.Response:
        return web.json_response({"count": len(stack.llm.requests)})

    async def stall_link(_request: web.Request) -> web.Response:
        proxy.stall()  # a link that went silent: open sockets, no bytes either way
        return web.json_response({"stalled": True})

    async def restore_link(_request: web.Request) -> web.Response:
        proxy.cut()  # the silent connections are gone for good; new ones flow again
        proxy.unstall()
        return web.json_response({"connections": proxy.connections})

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/expected", expected)
    app.router.add_post("/edge/crash", crash_edge)
    app.router.add_get("/llm/requests", llm_requests)
    app.router.add_post("/link/stall", stall_link)
    app.router.add_post("/link/restore", restore_link)
    return app


@pytest.fixture
async def world() -> AsyncIterator[dict[str, str]]:
    """The environment of the Node tests: the edge's URL, the same edge behind a TCP proxy
    that can go silent, and the control server's URL."""
    stack = await start_stack(ScriptedLLM(section_script))
    edge = EdgeProcess(stack.generator_addr)
    runner: web.AppRunner | None = None
    proxy: TcpProxy | None = None
    try:
        await edge.start()
        proxy = TcpProxy("127.0.0.1", edge.port)
        await proxy.start()
        runner, control_port = await serve_on_free_port(control_app(stack, edge, proxy))
        yield {
            "DOCGEN_TEST_URL": f"ws://127.0.0.1:{edge.port}/v1/ws",
            "DOCGEN_TEST_PROXY_URL": f"ws://{proxy.addr}/v1/ws",
            "DOCGEN_TEST_CONTROL": f"http://127.0.0.1:{control_port}",
        }
    finally:
        if runner is not None:
            await runner.cleanup()
        if proxy is not None:
            await proxy.stop()
        await edge.stop()
        await stack.close()


async def run_node(node: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        node,
        *args,
        cwd=PACKAGE,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 240)
    finally:
        if process.returncode is None:
            await stop_process(process)
    return process.returncode or 0, out.decode(errors="replace")


@pytest.mark.timeout(400)
async def test_the_js_client_under_node_against_a_real_edge(
    node_and_packages: str, world: dict[str, str]
) -> None:
    code, output = await run_node(
        node_and_packages, "--test", "--test-reporter=spec", "test/", env=world
    )
    assert code == 0, output
    # Every Node test ran and passed: none skipped, none cancelled.
    written = sum(
        path.read_text(encoding="utf-8").count('\ntest("')
        for path in (PACKAGE / "test").glob("*.mjs")
    )
    assert written >= 8
    assert f"ℹ pass {written}\n" in output, output
    assert "ℹ skipped 0" in output and "ℹ cancelled 0" in output, output


async def test_frame_types_are_generated_from_the_current_schemas(node_and_packages: str) -> None:
    code, output = await run_node(node_and_packages, "scripts/generate-types.mjs")
    assert code == 0, output
    types = (PACKAGE / "frames.d.ts").read_text(encoding="utf-8")
    # One type per schema file, in the unions a client switches on.
    for folder in ("client", "server"):
        for schema in sorted((ROOT / "schemas" / folder).glob("*.json")):
            name = "".join(part.capitalize() for part in schema.stem.split("_")) + "Frame"
            assert f"export type {name} =" in types or f"export interface {name} " in types, name
    code, output = await run_node(node_and_packages, "scripts/generate-types.mjs", "--check")
    assert code == 0, output


async def test_the_typed_example_compiles_and_a_misuse_does_not(
    node_and_packages: str, tmp_path: Path
) -> None:
    code, output = await run_node(node_and_packages, "scripts/generate-types.mjs")
    assert code == 0, output
    tsc = str(PACKAGE / "node_modules" / "typescript" / "bin" / "tsc")
    code, output = await run_node(node_and_packages, tsc, "--noEmit", "-p", "tsconfig.json")
    assert code == 0, output
    # The same example with a field the frames do not have: the types must catch it.
    example = (PACKAGE / "example" / "stream.ts").read_text(encoding="utf-8")
    assert "event.delta" in example
    broken = PACKAGE / "example" / f"broken-{os.getpid()}.ts"
    broken.write_text(example.replace("event.delta", "event.text"), encoding="utf-8")
    try:
        code, output = await run_node(
            node_and_packages, tsc, "--ignoreConfig", "--noEmit", "--strict",
            "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022",
            "--lib", "es2022,dom", "--types", "", str(broken),
        )  # fmt: skip
    finally:
        broken.unlink()
    assert code != 0
    assert "Property 'text' does not exist on type 'SectionChunkFrame'" in output, output
