"""What a connection that has not authenticated may hold: its request headers must arrive
within a deadline, and each client IP may keep only so many such connections open.

aiohttp alone holds a half-sent request for its keep-alive time (75 s) and counts nothing
before a handler runs: 500 half-sent requests from one address once held 500 file
descriptors for 75 s. `GuardedProtocol` sits between the socket and aiohttp's request
handler, sees the bytes before aiohttp parses them, and answers and closes on its own:
`429` when the address has too many unauthenticated connections, `408` when the headers are
late. The WebSocket handler calls `authenticated` once the handshake is accepted; from then on
the socket counts against the per-IP socket limit instead (`ConnectionLimiter`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

from aiohttp import web

from services.common import metrics
from services.edge.limits import PendingConnections

log = logging.getLogger(__name__)

_END_OF_HEADERS = b"\r\n\r\n"


def _answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_MANY = _answer(
    429,
    "Too Many Requests",
    "too_many_connections",
    "too many connections from this address that have not authenticated; close some",
)
TOO_SLOW = _answer(
    408, "Request Timeout", "header_timeout", "the request headers took too long to arrive"
)


class GuardedProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's `RequestHandler` (`inner`) once admitted. Until the
    first request's headers are complete a timer runs; aiohttp's keep-alive timeout, set to
    the same value (`server_options`), bounds every later request on the connection."""

    def __init__(
        self, inner: asyncio.Protocol, pending: PendingConnections, header_timeout_s: float
    ) -> None:
        self._inner = inner
        self._pending = pending
        self._header_timeout_s = header_timeout_s
        self._transport: asyncio.Transport | None = None
        self._ip: str | None = None
        """Set while this connection counts as pending (admitted, not authenticated)."""
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an `asyncio.Transport` instance: uvloop's is its
        # own class (services/common/event_loop.py).
        self._transport = stream = cast(asyncio.Transport, transport)
        peer = stream.get_extra_info("peername")
        ip = str(peer[0]) if peer else "unknown"
        if not self._pending.admit(ip):
            self._refused = True
            metrics.WS_HANDSHAKE_REJECTIONS.labels("429").inc()
            log.debug("connection refused: too many unauthenticated connections from one IP")
            stream.write(TOO_MANY)
            stream.close()
            return
        self._ip = ip
        self._timer = asyncio.get_running_loop().call_later(
            self._header_timeout_s, self._headers_too_slow
        )
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._timer is not None:
            # The end of the headers may straddle two reads: keep the last three bytes.
            if _END_OF_HEADERS in self._tail + data:
                self._timer.cancel()
                self._timer = None
            self._tail = (self._tail + data)[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._refused else self._inner.eof_received()

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.authenticated()  # no longer pending either way
        if not self._refused:
            self._inner.connection_lost(exc)

    def authenticated(self) -> None:
        """The WebSocket handshake was accepted: this connection no longer counts as pending."""
        if self._ip is not None:
            self._pending.release(self._ip)
            self._ip = None

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_too_slow(self) -> None:
        self._timer = None
        metrics.WS_HANDSHAKE_REJECTIONS.labels("408").inc()
        log.debug("connection closed: request headers not complete in time")
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(TOO_SLOW)
            self._transport.close()


def mark_authenticated(request: web.BaseRequest) -> None:
    """Tells the connection's guard (if it has one) that its handshake was accepted."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    if isinstance(protocol, GuardedProtocol):
        protocol.authenticated()


class GuardedSite(web.TCPSite):
    """`web.TCPSite` whose connections go through `GuardedProtocol`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        pending: PendingConnections,
        header_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._pending = pending
        self._header_timeout_s = header_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedProtocol(server(), self._pending, self._header_timeout_s),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port
