"""The whole docgen stack in the test's event loop, on port 0: scripted LLM, summary and
generator gRPC servers, edge HTTP server; plus a protocol client that checks every frame
the server sends against the published JSON Schemas."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from docgen.v1 import outline_pb2

from services.edge.app import create_app, edge_site, server_options
from services.edge.auth import mint_dev_token
from services.edge.schemas import FrameValidator
from services.edge.settings import DEV_JWT_SECRET, EdgeSettings
from services.generator.server import GeneratorServer
from services.generator.settings import GeneratorSettings
from services.summary.server import SummaryServer
from services.summary.settings import SummarySettings
from tests.support.scripted_llm import ScriptedLLM

_VALIDATOR = FrameValidator()

OUTLINE_3 = {
    "document_id": "doc-1",
    "title": "Running a small bakery",
    "sections": [
        {"id": "intro", "title": "Why bake", "brief": "Motivation", "target_tokens": 60},
        {
            "id": "ovens",
            "title": "Choosing ovens",
            "brief": "Deck vs convection",
            "target_tokens": 60,
        },
        {"id": "money", "title": "Making money", "brief": "Margins", "target_tokens": 60},
    ],
}


class ProtocolClient:
    """A WebSocket client of the docgen protocol. Every frame received is validated against
    its JSON Schema, so any test using it checks conformance for free."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.hello: dict[str, Any] = {}
        """The `session` frame the server sent first (read by `Stack.connect`)."""

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(
                f"expected a text frame, got {message.type.name} {message.data!r} {message.extra!r}"
            )
        frame = json.loads(message.data)
        _VALIDATOR.validate_server(frame)
        if frame["type"] == "session" and not self.hello and not self.received:
            # A client built around a socket of its own: its first frame is kept aside.
            self.hello = frame
            return await self.recv(timeout)
        self.received.append(frame)
        return frame

    async def recv_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(timeout=max(0.01, deadline - time.monotonic()))
            frames.append(frame)
            if predicate(frame):
                return frames

    async def run_to_end(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The frames until `run_end`, without `ack`s (the answers to `resume`/`cancel`,
        kept in `self.received` in order, and in `acks`)."""
        frames = await self.recv_until(lambda f: f["type"] == "run_end", timeout)
        return [frame for frame in frames if frame["type"] != "ack"]

    @property
    def acks(self) -> list[dict[str, Any]]:
        return [frame for frame in self.received if frame["type"] == "ack"]

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def outline_message(outline: dict[str, Any] = OUTLINE_3) -> outline_pb2.Outline:
    """An outline in the fixture format (`OUTLINE_3` by default) as the gRPC message."""
    return outline_pb2.Outline(
        document_id=outline["document_id"],
        title=outline["title"],
        sections=[outline_pb2.OutlineSection(**s) for s in outline["sections"]],
    )


@dataclass
class Stack:
    llm: ScriptedLLM
    summary: SummaryServer
    generator: GeneratorServer
    edge_runner: web.AppRunner
    edge_port: int
    edge_settings: EdgeSettings
    clients: list[ProtocolClient] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}/v1/ws"

    @property
    def generator_addr(self) -> str:
        return f"127.0.0.1:{self.generator.port}"

    def token(self, sub: str = "alice", **claims: Any) -> str:
        if not claims:
            return mint_dev_token(sub, secret=DEV_JWT_SECRET)
        now = int(time.time())
        payload = {"sub": sub, "aud": "docgen", "iat": now, "exp": now + 3600, **claims}
        return jwt.encode(
            {k: v for k, v in payload.items() if v is not None}, DEV_JWT_SECRET, algorithm="HS256"
        )

    async def connect(
        self, token: str | None = None, *, via: str = "subprotocol", **kwargs: Any
    ) -> ProtocolClient:
        token = token or self.token()
        session = aiohttp.ClientSession()
        protocols: tuple[str, ...] = ("docgen.v1",)
        headers: dict[str, str] = {}
        if via == "subprotocol":
            protocols = ("docgen.v1", f"bearer.{token}")
        else:
            headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await session.ws_connect(
                self.ws_url, protocols=protocols, headers=headers, **kwargs
            )
        except BaseException:
            await session.close()
            raise
        client = ProtocolClient(session, ws)
        self.clients.append(client)
        # Every socket starts with its `session` frame: read here, so tests that read the
        # socket directly see answers and events only.
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        client.hello = json.loads(message.data)
        _VALIDATOR.validate_server(client.hello)
        assert client.hello["type"] == "session", client.hello
        return client

    async def restart_edge(self) -> None:
        """Stops the edge as a rolling restart would (open sockets are closed with 4000) and
        starts a new one on the same port against the same generator. The new edge's settings
        carry its real port, so its default Origin allowlist is its own origin (a browser's)."""
        await self.edge_runner.cleanup()
        self.edge_settings = dataclasses.replace(self.edge_settings, port=self.edge_port)
        runner = web.AppRunner(
            create_app(self.edge_settings),
            handle_signals=False,
            shutdown_timeout=1.0,
            **server_options(self.edge_settings),
        )
        await runner.setup()
        await edge_site(runner, "127.0.0.1", self.edge_port).start()
        self.edge_runner = runner

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.edge_runner.cleanup()
        await self.generator.stop()
        await self.summary.stop()
        await self.llm.stop()


async def start_stack(
    llm: ScriptedLLM | None = None,
    *,
    generator: dict[str, Any] | None = None,
    edge: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    runlog_url: str | None = None,
) -> Stack:
    """`runlog_url`: the generator keeps run logs in that Redis (the `runlog_url` fixture
    gives None for the in-memory default, or a fresh Redis)."""
    llm = llm or ScriptedLLM()
    # A half-started stack is taken down again before the error reaches the test.
    async with contextlib.AsyncExitStack() as undo:
        await llm.start()
        undo.push_async_callback(llm.stop)
        summary_server = SummaryServer(
            dataclasses.replace(SummarySettings(), **(summary or {})), "127.0.0.1:0"
        )
        await summary_server.start()
        undo.push_async_callback(summary_server.stop)
        generator_settings = dataclasses.replace(
            GeneratorSettings(),
            **{
                "summary_addr": f"127.0.0.1:{summary_server.port}",
                "llm_base_url": llm.base_url,
                "llm_model": "scripted",
                "llm_connect_retries": 0,
                "llm_stall_timeout_s": 2.0,
                "runlog_url": runlog_url,
                **(generator or {}),
            },
        )
        generator_server = GeneratorServer(generator_settings, "127.0.0.1:0")
        await generator_server.start()
        undo.push_async_callback(generator_server.stop)
        edge_settings = dataclasses.replace(
            EdgeSettings(),
            port=0,
            generator_addr=f"127.0.0.1:{generator_server.port}",
            **(edge or {}),
        )
        runner, port = await start_edge(edge_settings)
        undo.pop_all()
    return Stack(llm, summary_server, generator_server, runner, port, edge_settings)


async def start_edge(settings: EdgeSettings) -> tuple[web.AppRunner, int]:
    """An edge app in this event loop on a free port, with the options and the guarded site
    `__main__` uses."""
    runner = web.AppRunner(
        create_app(settings), handle_signals=False, shutdown_timeout=1.0, **server_options(settings)
    )
    await runner.setup()
    site = edge_site(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site.port


def sections_text(frames: list[dict[str, Any]]) -> dict[str, str]:
    """Assembles each section's text from its chunks, discarding earlier attempts."""
    texts: dict[str, str] = {}
    for frame in frames:
        if frame["type"] == "section_start":
            texts[frame["section_id"]] = ""
        elif frame["type"] == "section_chunk":
            texts[frame["section_id"]] += frame["delta"]
    return texts


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)
