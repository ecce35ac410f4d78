"""Lean stream readers for the relay measurements: a WebSocket client and an SSE client on bare
asyncio protocols that do little more than find each token's `|<send time>` stamp in the bytes
they receive. On two cores the client shares the CPU with the processes it measures, so the
less it spends per token the less it distorts what it measures (aiohttp + json.loads cost
several times more per frame).

Only what the benchmark needs: unfragmented frames from the server, pings answered, masked
frames sent; chunked or plain SSE bodies."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import struct
import time
from collections.abc import Callable
from typing import Any

from bench.wsclient import SUBPROTOCOL, RelaySamples

# `|<unix s with 6 decimals>` (bench/stamping_llm.py) ends every token; a coalesced chunk
# holds several, each followed by the next token's space or the closing quote.
_STAMP = re.compile(rb"\|(\d+\.\d{6})")
_CHUNK = b'"type":"section_chunk"'


def _masked(opcode: int, payload: bytes) -> bytes:
    """A final client frame (clients must mask, RFC 6455 §5.3); payloads here are small."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class LeanWebSocket(asyncio.Protocol):
    """One socket following one run: records relay delays of its chunks, keeps the other
    frames' types, and resolves `done` at `run_end` (or when the socket closes)."""

    def __init__(self, samples: RelaySamples, on_first_end: Callable[[], None] | None) -> None:
        self._samples = samples
        self._on_first_end = on_first_end
        self._buffer = b""
        self._upgraded = False
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[str | None] = loop.create_future()
        self.errors: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))
        if not self.done.done():
            self.done.set_result(None)

    def send_json(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(_masked(0x1, json.dumps(frame).encode()))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked(0x8, struct.pack("!H", 1000)))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        received_at = time.time()
        buffer = self._buffer + data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(ConnectionError(buffer.split(b"\r\n", 1)[0].decode()))
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            self.upgraded.set_result(None)
            buffer = buffer[end + 4 :]
        position = 0
        size = len(buffer)
        while size - position >= 2:
            opcode = buffer[position] & 0x0F
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if size - start < length:
                break
            payload = buffer[start : start + length]
            position = start + length
            self._frame(opcode, payload, received_at)
        self._buffer = buffer[position:]

    def _frame(self, opcode: int, payload: bytes, received_at: float) -> None:
        if opcode == 0x1:
            if _CHUNK in payload:
                # One stamp per token: a coalesced chunk (`chunk_interval_ms`) carries several.
                for match in _STAMP.finditer(payload):
                    self._samples.add(received_at, received_at - float(match.group(1)))
                return
            frame = json.loads(payload)
            kind = frame.get("type")
            if kind == "section_end" and self._on_first_end is not None:
                self._on_first_end()
            elif kind == "error":
                self.errors.append(frame.get("code", "?"))
            elif kind == "run_end" and not self.done.done():
                self.done.set_result(frame["status"])
        elif opcode == 0x9 and self.transport is not None:  # ping: answer at once
            self.transport.write(_masked(0xA, payload))
        elif opcode == 0x8 and self.transport is not None:
            self.transport.close()


async def open_lean_websocket(
    host: str,
    port: int,
    jwt: str,
    samples: RelaySamples,
    on_first_end: Callable[[], None] | None = None,
) -> LeanWebSocket:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: LeanWebSocket(samples, on_first_end), host, port
    )
    key = base64.b64encode(os.urandom(16)).decode()
    assert protocol.transport is not None
    protocol.transport.write(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}, bearer.{jwt}\r\n\r\n"
        ).encode()
    )
    await protocol.upgraded
    return protocol


class LeanSSE(asyncio.Protocol):
    """One streaming chat completion read straight from the stamping LLM: every `|<stamp>"`
    in the body is a token; the stream ends at `[DONE]`."""

    def __init__(self, samples: RelaySamples) -> None:
        self._samples = samples
        self._tail = b""
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        received_at = time.time()
        buffer = self._tail + data
        last = 0
        for match in _STAMP.finditer(buffer):
            self._samples.add(received_at, received_at - float(match.group(1)))
            last = match.end()
        # Keep an unfinished stamp for the next read; 64 bytes hold any stamp.
        self._tail = buffer[max(last, len(buffer) - 64) :]
        if b"data: [DONE]" in buffer and self.transport is not None:
            self.transport.close()


async def lean_completion(
    host: str, port: int, model: str, tokens: int, samples: RelaySamples
) -> None:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: LeanSSE(samples), host, port)
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "relay"}],
            "max_tokens": tokens,
            "stream": True,
        }
    ).encode()
    assert protocol.transport is not None
    protocol.transport.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await protocol.done
