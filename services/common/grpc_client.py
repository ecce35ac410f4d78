"""How docgen services dial each other over gRPC."""

from __future__ import annotations

from typing import Any

import grpc

from services.common.grpc_tls import GrpcTls, PeerAuth

# A restarted peer should be found again within about a second, not after gRPC's default
# exponential backoff (1 s growing to 120 s). Keepalive notices a dead peer on an idle channel.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
)
# Calls spread over every address the target resolves to (a comma list, or every A record of
# a `dns:///` name such as a Kubernetes headless Service), not all sent to the first one.
BALANCING_OPTIONS: tuple[tuple[str, str], ...] = (("grpc.lb_policy_name", "round_robin"),)


def listed(address: str) -> list[str]:
    """The entries of a comma list of addresses (one entry for anything else)."""
    return [entry.strip() for entry in address.split(",") if entry.strip()]


def target(address: str) -> str:
    """A gRPC target for `address`: `host:port`, a `dns:///name:port` URI, or a comma list of
    IP `ip:port` entries (turned into gRPC's `ipv4:a:1,b:2` / `ipv6:[a]:1,[b]:2` syntax)."""
    entries = listed(address)
    if len(entries) < 2:
        return address.strip()
    scheme = "ipv6" if all(entry.startswith("[") for entry in entries) else "ipv4"
    return f"{scheme}:{','.join(entries)}"


def insecure_channel(
    address: str, interceptors: list[grpc.aio.ClientInterceptor] | None = None
) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target(address), options=CHANNEL_OPTIONS + BALANCING_OPTIONS, interceptors=interceptors
    )


def channel(
    address: str, tls: GrpcTls | None = None, auth: PeerAuth | None = None
) -> grpc.aio.Channel:
    """A channel to another docgen service: TLS when `tls` is configured, else plaintext;
    every call carries the service token when `auth` has one."""
    interceptors = _token_interceptors(auth) if auth is not None and auth.service_token else None
    if tls is None:
        return insecure_channel(address, interceptors)
    return grpc.aio.secure_channel(
        target(address),
        tls.channel_credentials(),
        options=CHANNEL_OPTIONS + BALANCING_OPTIONS,
        interceptors=interceptors,
    )


class _WithToken:
    """Adds the service token to a call's metadata (services/common/grpc_tls.py)."""

    def __init__(self, auth: PeerAuth) -> None:
        self._extra = auth.outgoing_metadata()

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()), *self._extra)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first call shape it matches (an elif chain), so
# each shape needs its own class.
class _UnaryUnaryToken(_WithToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStreamToken(_WithToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnaryToken(_WithToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStreamToken(_WithToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def _token_interceptors(auth: PeerAuth) -> list[grpc.aio.ClientInterceptor]:
    shapes = (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
    return [shape(auth) for shape in shapes]
