"""The edge's HTTP application: the WebSocket endpoint, the demo page and the probes."""

from __future__ import annotations

import logging
import socket
import time
import weakref
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from services.common import metrics
from services.common.grpc_client import channel, listed
from services.common.logs import bind_log_context, hash_user
from services.edge.auth import (
    SUBPROTOCOL,
    AuthError,
    Principal,
    TokenVerifier,
    check_origin,
    refuse_token_in_query,
    token_from_handshake,
)
from services.edge.document import document_handler
from services.edge.frames import REFUSAL_CLOSE_CODES
from services.edge.generator_client import GeneratorClient, GeneratorError
from services.edge.generator_pool import GeneratorPool, unready
from services.edge.http_guard import GuardedSite, mark_authenticated
from services.edge.jwks import JwksKeys
from services.edge.limits import ConnectionLimiter, PendingConnections
from services.edge.redaction import RedactingAccessLogger, http_logger
from services.edge.schemas import FrameValidator
from services.edge.session import SocketSession, close_for_shutdown
from services.edge.settings import EdgeSettings

log = logging.getLogger(__name__)

# The page ships as package data; aiohttp serves files from a real directory, which an
# installed (unzipped) package always has.
STATIC_DIR = Path(str(files(__package__ or "services.edge") / "static"))
# The first-party JavaScript client (clients/js/, package data of `clients`): the page imports
# it from /static/docgen.js, and so can anyone's page on an allowed origin.
JS_CLIENT = Path(str(files("clients") / "js" / "docgen.js"))

SETTINGS = web.AppKey("settings", EdgeSettings)
VERIFIER = web.AppKey("verifier", TokenVerifier)
VALIDATOR = web.AppKey("validator", FrameValidator)
GENERATOR_CHANNELS = web.AppKey("generator_channels", list[grpc.aio.Channel])
GENERATOR = web.AppKey[GeneratorClient | GeneratorPool]("generator")
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
SHUTTING_DOWN = web.AppKey("shutting_down", list[bool])
CONNECTIONS = web.AppKey("connections", ConnectionLimiter)
PENDING = web.AppKey("pending", PendingConnections)
GENERATOR_LIMITS: web.AppKey[dict[str, Any]] = web.AppKey("generator_limits")
# The generator's limits change only with its configuration: asked again after this long, or
# sooner after a failure (then the `session` frame goes without them).
LIMITS_TTL_S = 60.0
LIMITS_RETRY_S = 5.0
LIMITS_TIMEOUT_S = 0.5
# The kernel's send buffer of one socket. Left to autotuning it grows to megabytes, and a
# slow reader then has seconds of frames queued ahead of the heartbeat's ping: its pong comes
# too late and a live client is dropped. Small, the backlog waits in the session's outbox
# instead (replays wait there for room; see session.py), and a ping reaches the client
# within a fraction of a second of frames.
WS_SEND_BUFFER_BYTES = 128 * 1024

# aiohttp's own loggers can quote a request line or header (with a token in it); these get
# the redacting filter however the server was started.
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.websocket", "aiohttp.web")


def json_error(status: int, code: str, message: str) -> web.Response:
    """A handshake refused before the upgrade, as the protocol documents it."""
    metrics.WS_HANDSHAKE_REJECTIONS.labels(str(status)).inc()
    log.info("handshake refused", extra={"status": status, "code": code})
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    app = request.app
    settings = app[SETTINGS]
    if app[SHUTTING_DOWN][0]:
        return json_error(503, "shutting_down", "this edge is shutting down; connect again")
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=settings.heartbeat_s,
        max_msg_size=settings.max_frame_bytes,
    )
    ip = request.remote or "unknown"
    try:
        principal = await admit(request, ws, ip)
    except AuthError as error:
        if "Origin" in request.headers and error.code in REFUSAL_CLOSE_CODES:
            if ws.can_prepare(request).ok:
                return await refuse_after_upgrade(request, ws, error)
        response = json_error(error.status, error.code, error.message)
        if error.status == 426:
            response.headers["Upgrade"] = "websocket"
        return response
    mark_authenticated(request)  # counted as an open socket from here, no longer as pending
    # No await between admit's last count check and this: the count cannot be overtaken.
    with app[CONNECTIONS].hold(user_id=principal.user_id, ip=ip):
        return await serve_socket(request, ws, principal, started)


async def refuse_after_upgrade(
    request: web.Request, ws: web.WebSocketResponse, error: AuthError
) -> web.WebSocketResponse:
    """A browser's refusal: page code cannot see an HTTP answer to an upgrade, only a close
    code and reason (docs/protocol.md, "Refusals a browser can read"). Nothing is read or
    sent on this socket but the close."""
    code = REFUSAL_CLOSE_CODES[error.code]
    await ws.prepare(request)
    metrics.WS_HANDSHAKE_REJECTIONS.labels(str(code)).inc()
    log.info("handshake refused by a close", extra={"close_code": code, "code": error.code})
    await ws.close(code=code, message=error.code.encode())
    return ws


async def admit(request: web.Request, ws: web.WebSocketResponse, ip: str) -> Principal:
    """Every check of the handshake, before the upgrade; raises `AuthError`. A plain GET
    gets the answer the upgrade would get (the CLI reads refusals that way) up to the very
    last check, which is that it is an upgrade at all."""
    app = request.app
    settings = app[SETTINGS]
    connections = app[CONNECTIONS]
    refuse_token_in_query(request.query.items())
    check_origin(
        request.headers,
        allowed=settings.origins,
        any_origin=settings.any_origin,
        allow_missing=settings.allow_missing_origin,
    )
    refusal = connections.ip_refusal(ip)
    if refusal is not None:
        raise AuthError(429, "too_many_connections", refusal)
    principal = await app[VERIFIER].verify(token_from_handshake(request.headers))
    refusal = connections.refusal(user_id=principal.user_id, ip=ip)
    if refusal is not None:
        raise AuthError(429, "too_many_connections", refusal)
    if not ws.can_prepare(request).ok:
        raise AuthError(426, "upgrade_required", "this is a WebSocket endpoint: send an upgrade")
    return principal


async def serve_socket(
    request: web.Request, ws: web.WebSocketResponse, principal: Principal, started: float
) -> web.WebSocketResponse:
    app = request.app
    settings = app[SETTINGS]
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SEND_BUFFER_BYTES)
    metrics.WS_HANDSHAKE_SECONDS.observe(time.perf_counter() - started)
    app[SOCKETS].add(ws)
    session = SocketSession(
        ws,
        principal=principal,
        generator=app[GENERATOR],
        validator=app[VALIDATOR],
        settings=settings,
        verifier=app[VERIFIER],
        generator_limits=await generator_limits(app),
        transport=request.transport,  # type: ignore[arg-type]
    )
    metrics.WS_OPEN_SOCKETS.inc()
    opened = time.monotonic()
    with bind_log_context(user=hash_user(principal.user_id)):
        log.info("socket opened")
        try:
            await session.serve()
        finally:
            metrics.WS_OPEN_SOCKETS.dec()
            metrics.WS_CLOSES.labels(str(ws.close_code)).inc()
            log.info(
                "socket closed",
                extra={
                    "close_code": ws.close_code,
                    "duration_ms": int((time.monotonic() - opened) * 1000),
                },
            )
    return ws


async def generator_limits(app: web.Application) -> dict[str, int]:
    """The generator's limits for the `session` frame, cached (`LIMITS_TTL_S`)."""
    cache = app[GENERATOR_LIMITS]
    now = time.monotonic()
    if now < cache.get("fresh_until", 0.0):
        return dict(cache.get("limits", {}))
    try:
        limits = await app[GENERATOR].limits(timeout_s=LIMITS_TIMEOUT_S)
    except GeneratorError:
        cache["fresh_until"] = now + LIMITS_RETRY_S
        return dict(cache.get("limits", {}))
    cache.update(limits=limits, fresh_until=now + LIMITS_TTL_S)
    return dict(limits)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def js_client(request: web.Request) -> web.FileResponse:
    # Public code, no credentials: any page on an allowed origin may import the module from
    # here (module scripts are fetched with CORS).
    return web.FileResponse(JS_CLIENT, headers={"Access-Control-Allow-Origin": "*"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[SHUTTING_DOWN][0]:
        return web.json_response({"status": "shutting_down"}, status=503)
    problem = await unready(request.app[GENERATOR_CHANNELS])
    if problem is not None:
        return web.json_response(problem, status=503)
    return web.json_response({"status": "ready"})


async def generator_channel_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Several generators named one by one: a channel (an event stream) each
    # (generator_pool.py); else one channel, round robin over what it resolves to.
    addresses = listed(settings.generator_addr) if settings.event_stream else []
    if len(addresses) < 2:
        addresses = [settings.generator_addr]
    channels = [channel(a, settings.grpc_tls, settings.grpc_peer_auth) for a in addresses]
    clients = [
        GeneratorClient(
            generator_channel,
            unary_timeout_s=settings.grpc_timeout_s,
            stream_timeout_s=settings.stream_timeout_s,
            event_stream=settings.event_stream,
        )
        for generator_channel in channels
    ]
    app[GENERATOR_CHANNELS] = channels
    app[GENERATOR] = clients[0] if len(clients) == 1 else GeneratorPool(clients, channels)
    yield
    app[GENERATOR].close()
    for generator_channel in channels:
        await generator_channel.close()


async def on_shutdown(app: web.Application) -> None:
    # Readiness fails and upgrades are refused from now on; open sockets are told to
    # reconnect (4000), which lands them on another edge that can resume their runs.
    app[SHUTTING_DOWN][0] = True
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await close_for_shutdown(ws)


def server_options(settings: EdgeSettings) -> dict[str, Any]:
    """aiohttp server arguments (for `run_app` or `AppRunner`): handshake header limits, and
    logs that never carry a token, header or query string."""
    return {
        "logger": http_logger("services.edge.http"),
        "access_log_class": RedactingAccessLogger,
        "access_log": http_logger("services.edge.access") if settings.access_log else None,
        "max_line_size": settings.max_header_bytes,
        "max_field_size": settings.max_header_bytes,
        # Bounds a half-sent or idle request after the first (`GuardedSite` bounds the first).
        "keepalive_timeout": settings.header_timeout_s,
    }


def edge_site(runner: web.AppRunner, host: str | None, port: int) -> GuardedSite:
    """The edge's listening site: every connection goes through `GuardedProtocol` (header
    deadline, cap on unauthenticated connections per IP). Use after `runner.setup()`."""
    app = runner.app
    return GuardedSite(
        runner,
        host,
        port,
        pending=app[PENDING],
        header_timeout_s=app[SETTINGS].header_timeout_s,
        reuse_port=app[SETTINGS].reuse_port or None,
    )


def create_app(settings: EdgeSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[VERIFIER] = TokenVerifier(
        secret=settings.jwt_secret,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_s=settings.jwt_leeway_s,
        jwks={
            issuer: JwksKeys(
                url,
                cache_s=settings.jwks_cache_s,
                min_refresh_s=settings.jwks_min_refresh_s,
                timeout_s=settings.jwks_timeout_s,
            )
            for issuer, url in settings.jwks_urls
        },
    )
    app[CONNECTIONS] = ConnectionLimiter(
        per_user=settings.max_sockets_per_user, per_ip=settings.max_sockets_per_ip
    )
    app[PENDING] = PendingConnections(per_ip=settings.max_pending_per_ip)
    for name in AIOHTTP_LOGGERS:
        http_logger(name)
    app[VALIDATOR] = FrameValidator()
    app[SOCKETS] = weakref.WeakSet()
    app[SHUTTING_DOWN] = [False]
    app[GENERATOR_LIMITS] = {}
    app.cleanup_ctx.append(generator_channel_ctx)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/v1/ws", websocket_handler)
    app.router.add_get("/v1/runs/{run_id}/document", document_handler(VERIFIER, GENERATOR))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # No /metrics here: the public port is what the Ingress routes. Metrics have their own
    # loopback port (`DOCGEN_EDGE_METRICS_PORT`, services/edge/__main__.py).
    app.router.add_get("/static/docgen.js", js_client)
    app.router.add_static("/static/", STATIC_DIR)
    return app
