"""The edge's HTTP application: the WebSocket endpoint, the demo page and the probes."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import metrics
from services.common.grpc_client import insecure_channel
from services.common.logs import bind_log_context, hash_user
from services.edge.auth import SUBPROTOCOL, AuthError, TokenVerifier, token_from_handshake
from services.edge.generator_client import GeneratorClient
from services.edge.schemas import FrameValidator
from services.edge.session import SocketSession, close_for_shutdown
from services.edge.settings import EdgeSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

SETTINGS = web.AppKey("settings", EdgeSettings)
VERIFIER = web.AppKey("verifier", TokenVerifier)
VALIDATOR = web.AppKey("validator", FrameValidator)
GENERATOR_CHANNEL = web.AppKey("generator_channel", grpc.aio.Channel)
GENERATOR = web.AppKey("generator", GeneratorClient)
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
SHUTTING_DOWN = web.AppKey("shutting_down", list[bool])


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
    origin = request.headers.get("Origin")
    if origin is None:
        if not settings.allow_missing_origin:
            return json_error(403, "origin_required", "an Origin header is required")
    elif origin not in settings.origins:
        return json_error(403, "origin_not_allowed", "this Origin may not connect")
    try:
        token = token_from_handshake(request.headers)
        principal = app[VERIFIER].verify(token)
    except AuthError as error:
        return json_error(error.status, error.code, error.message)

    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=settings.heartbeat_s,
        max_msg_size=settings.max_frame_bytes,
    )
    await ws.prepare(request)
    metrics.WS_HANDSHAKE_SECONDS.observe(time.perf_counter() - started)
    app[SOCKETS].add(ws)
    session = SocketSession(
        ws,
        principal=principal,
        generator=app[GENERATOR],
        validator=app[VALIDATOR],
        settings=settings,
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
                extra={"close_code": ws.close_code, "duration_ms": int((time.monotonic() - opened) * 1000)},
            )
    return ws


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = metrics.render_latest()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def readyz(request: web.Request) -> web.Response:
    if request.app[SHUTTING_DOWN][0]:
        return web.json_response({"status": "shutting_down"}, status=503)
    stub = health_pb2_grpc.HealthStub(request.app[GENERATOR_CHANNEL])
    try:
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
    except grpc.aio.AioRpcError as error:
        return web.json_response({"status": "generator_unreachable", "detail": error.code().name}, status=503)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        return web.json_response({"status": "generator_not_serving"}, status=503)
    return web.json_response({"status": "ready"})


async def generator_channel_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    channel = insecure_channel(settings.generator_addr)
    app[GENERATOR_CHANNEL] = channel
    app[GENERATOR] = GeneratorClient(
        channel, unary_timeout_s=settings.grpc_timeout_s, stream_timeout_s=settings.stream_timeout_s
    )
    yield
    await channel.close()


async def on_shutdown(app: web.Application) -> None:
    # Readiness fails and upgrades are refused from now on; open sockets are told to
    # reconnect (4000), which lands them on another edge that can resume their runs.
    app[SHUTTING_DOWN][0] = True
    for ws in list(app[SOCKETS]):
        await close_for_shutdown(ws)


def create_app(settings: EdgeSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[VERIFIER] = TokenVerifier(
        secret=settings.jwt_secret,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_s=settings.jwt_leeway_s,
    )
    app[VALIDATOR] = FrameValidator()
    app[SOCKETS] = weakref.WeakSet()
    app[SHUTTING_DOWN] = [False]
    app.cleanup_ctx.append(generator_channel_ctx)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/v1/ws", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_static("/static/", STATIC_DIR)
    return app
