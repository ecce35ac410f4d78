"""What every docgen gRPC server carries besides its own service: health, reflection, a
listening port that is TLS when configured, and peer authentication (`PeerAuthInterceptor`):
a server that listens beyond loopback refuses to start unless its callers must prove who
they are (`require_peer_auth`)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.env import ConfigError
from services.common.grpc_tls import SERVICE_TOKEN_METADATA, GrpcTls, PeerAuth
from services.common.loopback import is_loopback_address

log = logging.getLogger(__name__)

# Health stays open to any caller: probes (kubelet, load balancers) carry no credentials, and
# it tells nothing but SERVING / NOT_SERVING.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def add_health_and_reflection(
    server: grpc.aio.Server, service_full_names: list[str]
) -> health.aio.HealthServicer:
    """Registers grpc.health.v1 (overall and per service, SERVING) and server reflection."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_full_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return health_servicer


def require_peer_auth(address: str, tls: GrpcTls | None, auth: PeerAuth | None) -> None:
    """Refuses (ConfigError) to listen beyond loopback unless callers must authenticate: mutual
    TLS with an allowlist of client identities, or a service token. Anyone who can reach an
    open generator can start, read and cancel runs as any user."""
    if is_loopback_address(address):
        return
    mutual_tls = tls is not None and tls.root_ca is not None
    if auth is not None and (auth.service_token or (mutual_tls and auth.allowed_peers)):
        return
    raise ConfigError(
        f"refusing to listen on {address}: it is not loopback and callers are not "
        "authenticated. Configure mutual TLS with an allowlist (DOCGEN_GRPC_TLS_CERT, "
        "DOCGEN_GRPC_TLS_KEY, DOCGEN_GRPC_TLS_CA and DOCGEN_GRPC_ALLOWED_PEERS) or a service "
        "token (DOCGEN_GRPC_SERVICE_TOKEN), or listen on 127.0.0.1"
    )


def add_port(
    server: grpc.aio.Server,
    address: str,
    tls: GrpcTls | None = None,
    auth: PeerAuth | None = None,
) -> int:
    """Listens on `address`, over TLS when `tls` is configured; returns the port (0: failed).
    Beyond loopback, only with peer authentication (`require_peer_auth`)."""
    require_peer_auth(address, tls, auth)
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, tls.server_credentials())


async def set_serving(
    health_servicer: health.aio.HealthServicer, names: list[str], serving: bool
) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *names]:
        await health_servicer.set(name, status)


def peer_interceptors(auth: PeerAuth | None) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors for `grpc.aio.server(interceptors=...)`: none when nothing is set."""
    return [PeerAuthInterceptor(auth)] if auth is not None and auth.enabled else []


def peer_identities(context: grpc.aio.ServicerContext) -> set[str]:
    """The caller's client-certificate names: subject alternative names and common name."""
    names: set[str] = set()
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        for value in context.auth_context().get(key, ()):
            names.add(value.decode(errors="replace") if isinstance(value, bytes) else value)
    return names


class PeerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health must carry the service token (UNAUTHENTICATED otherwise) and/or
    come with a client certificate named in the allowlist (PERMISSION_DENIED otherwise)."""

    def __init__(self, auth: PeerAuth) -> None:
        self._token = auth.service_token.encode() if auth.service_token else None
        self._allowed = auth.allowed_peers

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_PREFIXES):
            return handler
        return _guarded(handler, self._check)

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if self._token is not None:
            presented = b""
            for key, value in context.invocation_metadata() or ():
                if key == SERVICE_TOKEN_METADATA:
                    presented = value.encode() if isinstance(value, str) else value
            # Constant time: how much of the token matched must not show in the timing.
            if not hmac.compare_digest(presented, self._token):
                log.info(
                    "gRPC call refused: no valid service token", extra={"peer": context.peer()}
                )
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "service token required")
        if self._allowed and not (peer_identities(context) & self._allowed):
            log.info("gRPC call refused: peer not allowed", extra={"peer": context.peer()})
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "this client certificate may not call"
            )


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def _guarded(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """`handler` with `check` run before its behaviour, for each of the four call shapes.
    grpc.aio tells coroutines and async generators from plain functions by inspection, so
    each wrapper is a real `async def` of the right kind."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary or handler.stream_unary:
        unary_behavior = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await unary_behavior(request, context)

        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return make(unary, **codec)
    stream_behavior = handler.unary_stream or handler.stream_stream

    async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        result = stream_behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:
            await result  # a handler that writes with context.write()

    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return make(streamed, **codec)
