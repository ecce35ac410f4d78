"""The benchmark's side of the WebSocket protocol: timed raw handshakes (TCP connect to the
`101` status line, nothing else in the way), idle authenticated sockets, and lean stream
readers that timestamp every frame on arrival."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.processes import BENCH_JWT_SECRET
from services.common.sentence_end import HOLD_FROM_SHARE
from services.edge.auth import mint_dev_token
from services.generator.outline import MAX_TARGET_TOKENS

SUBPROTOCOL = "docgen.v1"
# A masked close frame with code 1000, as a client must send it (RFC 6455 §5.3).
_MASK = b"\x01\x02\x03\x04"
_CLOSE_FRAME = (
    bytes([0x88, 0x82])
    + _MASK
    + bytes(b ^ _MASK[i % 4] for i, b in enumerate(struct.pack("!H", 1000)))
)


class HandshakeFailed(RuntimeError):
    pass


def token(sub: str) -> str:
    return mint_dev_token(sub, secret=BENCH_JWT_SECRET, ttl_s=6 * 3600)


def _upgrade_request(host: str, port: int, jwt: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    # As a browser sends it: the JWT in a second subprotocol, never in the URL.
    return (
        f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}, bearer.{jwt}\r\n\r\n"
    ).encode()


async def timed_handshake(host: str, port: int, jwt: str) -> float:
    """Seconds from starting the TCP connect to receiving the whole `101` response head; then
    closes the socket politely (close frame, FIN)."""
    request = _upgrade_request(host, port, jwt)
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        elapsed = time.perf_counter() - started
        if not head.startswith(b"HTTP/1.1 101"):
            raise HandshakeFailed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        writer.write(_CLOSE_FRAME)
    finally:
        writer.close()
    return elapsed


async def open_idle_socket(host: str, port: int, jwt: str) -> asyncio.StreamWriter:
    """An authenticated socket that is then left alone (the caller closes the writer)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(_upgrade_request(host, port, jwt))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise HandshakeFailed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return writer


def one_section_outline(index: int, tokens: int) -> dict[str, Any]:
    """A one-section outline whose run streams `tokens` tokens from the stamping LLM: its brief
    asks for that many (bench/stamping_llm.py), and its words never end a sentence. The target
    is set past them, so neither the generator's sentence stop (at the target) nor its
    whole-sentence hold (from 0.9 x the target, services/common/sentence_end.py) shapes a
    bench stream: every token is relayed as it comes, which is what the relay measures."""
    # Past the stream, within what an outline may ask (a longer stream is held from 0.9 x
    # the limit on: only the handshake scenario's 130 s background streams are that long).
    target = min(MAX_TARGET_TOKENS, math.ceil(tokens / HOLD_FROM_SHARE) + 1)
    return {
        "document_id": f"bench-{index}",
        "title": "Bench stream",
        "sections": [
            {
                "id": "s1",
                "title": "Relay",
                "brief": f"stream {tokens} tokens",
                "target_tokens": target,
            }
        ],
    }


@dataclass
class RelaySamples:
    """(receive time, receive - send) of every token of every stream, unix seconds."""

    received_at: array[float] = field(default_factory=lambda: array("d"))
    delay_s: array[float] = field(default_factory=lambda: array("d"))

    def add(self, received_at: float, delay_s: float) -> None:
        self.received_at.append(received_at)
        self.delay_s.append(delay_s)

    def window(self, start: float, end: float) -> list[float]:
        return [d for t, d in zip(self.received_at, self.delay_s, strict=True) if start <= t < end]


def stamped_delay(delta: str, received_at: float) -> float | None:
    _, sep, stamp = delta.rpartition("|")
    if not sep:
        return None
    try:
        return received_at - float(stamp)
    except ValueError:
        return None


@dataclass
class StreamOutcome:
    status: str | None = None
    """`run_end` status, or None when the stream broke first."""
    errors: list[str] = field(default_factory=list)
    run_id: str | None = None
    close_code: int | None = None


class StreamSocket:
    """One client socket that starts runs and reads them to `run_end`."""

    def __init__(self, session: aiohttp.ClientSession, url: str, sub: str) -> None:
        self._session = session
        self._url = url
        self._sub = sub
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self) -> None:
        self.ws = await self._session.ws_connect(
            self._url,
            protocols=(SUBPROTOCOL, f"bearer.{token(self._sub)}"),
            autoping=True,
            max_msg_size=0,
        )

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(frame))

    async def relay_run(
        self,
        outline: dict[str, Any],
        samples: RelaySamples,
        *,
        on_first_end: Callable[[], None] | None = None,
        timeout_s: float = 600.0,
    ) -> StreamOutcome:
        """Starts a run on the stamping LLM and records each chunk's relay delay."""
        assert self.ws is not None
        outcome = StreamOutcome()
        await self.send({"type": "generate", "outline": outline})
        ws = self.ws
        clock = time.time
        loads = json.loads
        async with asyncio.timeout(timeout_s):
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                received_at = clock()
                data: str = message.data
                if '"section_chunk"' in data:
                    delay = stamped_delay(loads(data)["delta"], received_at)
                    if delay is not None:
                        samples.add(received_at, delay)
                    continue
                frame = loads(data)
                kind = frame["type"]
                if kind == "run_started":
                    outcome.run_id = frame["run_id"]
                elif kind == "section_end" and on_first_end is not None:
                    on_first_end()
                elif kind == "error":
                    outcome.errors.append(frame["code"])
                elif kind == "run_end":
                    outcome.status = frame["status"]
                    return outcome
        outcome.close_code = ws.close_code
        return outcome

    async def frames_of_run(
        self, outline: dict[str, Any], *, timeout_s: float = 900.0
    ) -> list[tuple[float, dict[str, Any]]]:
        """Starts a run and returns every frame of it with its arrival time (perf_counter),
        the first entry being the moment `generate` was sent."""
        assert self.ws is not None
        frames: list[tuple[float, dict[str, Any]]] = [
            (time.perf_counter(), {"type": "generate_sent"})
        ]
        await self.send({"type": "generate", "outline": outline})
        async with asyncio.timeout(timeout_s):
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(
                        f"socket ended before run_end: {message.type.name} {self.ws.close_code}"
                    )
                frame = json.loads(message.data)
                frames.append((time.perf_counter(), frame))
                if frame["type"] == "run_end":
                    return frames
        raise ConnectionError("socket ended before run_end")

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()


def client_session() -> aiohttp.ClientSession:
    # No connection cap: every stream is its own socket, as browsers are.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
