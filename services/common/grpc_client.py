"""How docgen services dial each other over gRPC."""

from __future__ import annotations

import grpc

# A restarted peer should be found again within about a second, not after gRPC's default
# exponential backoff (1 s growing to 120 s). Keepalive notices a dead peer on an idle channel.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
)


def insecure_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
