"""A deliberately minimal WebSocket client over a raw TCP socket, for what a polite client
library won't do: never read, send invalid UTF-8 or malformed frames."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass


@dataclass
class RawFrame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode == 0x8 and len(self.payload) >= 2:
            return int(struct.unpack("!H", self.payload[:2])[0])
        return None


class RawWebSocket:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handshake: bytes
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.handshake = handshake

    @property
    def status(self) -> int:
        return int(self.handshake.split(b" ", 2)[1])

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        protocols: str,
        extra_headers: str = "",
        rcvbuf: int | None = None,
    ) -> RawWebSocket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocols}\r\n{extra_headers}\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        handshake = await reader.readuntil(b"\r\n\r\n")
        return cls(reader, writer, handshake)

    def send(self, payload: bytes, *, opcode: int = 0x1, fin: bool = True) -> None:
        mask = os.urandom(4)
        header = bytes([(0x80 if fin else 0) | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def recv(self) -> RawFrame:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return RawFrame(first & 0x0F, await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.transport.abort()
