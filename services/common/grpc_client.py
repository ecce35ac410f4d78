"""How docgen services dial each other over gRPC."""

from __future__ import annotations

import grpc

from services.common.grpc_tls import GrpcTls

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


def target(address: str) -> str:
    """A gRPC target for `address`: `host:port`, a `dns:///name:port` URI, or a comma list of
    IP `ip:port` entries (turned into gRPC's `ipv4:a:1,b:2` / `ipv6:[a]:1,[b]:2` syntax)."""
    entries = [entry.strip() for entry in address.split(",") if entry.strip()]
    if len(entries) < 2:
        return address.strip()
    scheme = "ipv6" if all(entry.startswith("[") for entry in entries) else "ipv4"
    return f"{scheme}:{','.join(entries)}"


def insecure_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target(address), options=CHANNEL_OPTIONS + BALANCING_OPTIONS)


def channel(address: str, tls: GrpcTls | None = None) -> grpc.aio.Channel:
    """A channel to another docgen service: TLS when `tls` is configured, else plaintext."""
    if tls is None:
        return insecure_channel(address)
    return grpc.aio.secure_channel(
        target(address), tls.channel_credentials(), options=CHANNEL_OPTIONS + BALANCING_OPTIONS
    )
