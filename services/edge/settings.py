"""Edge configuration, read once from the environment."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.common.env import ConfigError, env_bool, env_float, env_int, env_list, env_opt, env_str

log = logging.getLogger(__name__)

# Publicly known on purpose: only for local development, and the edge says so loudly.
DEV_JWT_SECRET = "docgen-dev-secret-for-local-use-only-0123456789"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class EdgeSettings:
    host: str = "127.0.0.1"
    """Listen host (`DOCGEN_EDGE_HOST`)."""
    port: int = 8080
    """Listen port (`DOCGEN_EDGE_PORT`)."""
    generator_addr: str = "127.0.0.1:50051"
    """Generator to dial (`DOCGEN_GENERATOR_ADDR`)."""
    jwt_secret: str = DEV_JWT_SECRET
    """HS256 key (`DOCGEN_JWT_SECRET`); the dev default logs a warning."""
    jwt_audience: str = "docgen"
    """Required `aud` (`DOCGEN_JWT_AUDIENCE`)."""
    jwt_issuer: str | None = None
    """Required `iss` when set (`DOCGEN_JWT_ISSUER`)."""
    jwt_leeway_s: float = 30.0
    """Clock skew allowed on `exp`/`nbf`/`iat` (`DOCGEN_JWT_LEEWAY_S`)."""
    allowed_origins: tuple[str, ...] = ()
    """Exact Origin values allowed (`DOCGEN_ALLOWED_ORIGINS`); default: the edge's own."""
    allow_missing_origin: bool = True
    """Accept handshakes without Origin, i.e. non-browser clients (`DOCGEN_ALLOW_NO_ORIGIN`)."""
    heartbeat_s: float = 20.0
    """Server pings every this many seconds; a socket silent for 1.5x this is dropped
    (`DOCGEN_WS_HEARTBEAT_S`)."""
    max_frame_bytes: int = 256 * 1024
    """Largest client frame accepted; larger ones close the socket with 1009
    (`DOCGEN_WS_MAX_FRAME_BYTES`)."""
    send_queue_frames: int = 8192
    """Frames buffered per socket for a client that reads slowly; past it the socket is
    closed with 4001 and the client should resume (`DOCGEN_WS_SEND_QUEUE_FRAMES`)."""
    grpc_timeout_s: float = 5.0
    """Deadline of unary gRPC calls to the generator (`DOCGEN_GRPC_TIMEOUT_S`)."""
    stream_timeout_s: float = 3600.0
    """Deadline of one follow stream; the edge re-attaches transparently when it expires
    (`DOCGEN_STREAM_TIMEOUT_S`)."""

    @property
    def uses_dev_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    @property
    def origins(self) -> frozenset[str]:
        if self.allowed_origins:
            return frozenset(self.allowed_origins)
        return frozenset({f"http://{self.host}:{self.port}", f"http://localhost:{self.port}"})

    @classmethod
    def from_env(cls) -> EdgeSettings:
        secret = env_opt("DOCGEN_JWT_SECRET")
        if secret is None:
            log.warning(
                "DOCGEN_JWT_SECRET is not set: using the public development secret. "
                "Anyone can mint tokens for this edge; set a secret of >= %d bytes in production.",
                MIN_SECRET_BYTES,
            )
            secret = DEV_JWT_SECRET
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"DOCGEN_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
        return cls(
            host=env_str("DOCGEN_EDGE_HOST", cls.host),
            port=env_int("DOCGEN_EDGE_PORT", cls.port, minimum=0),
            generator_addr=env_str("DOCGEN_GENERATOR_ADDR", cls.generator_addr),
            jwt_secret=secret,
            jwt_audience=env_str("DOCGEN_JWT_AUDIENCE", cls.jwt_audience),
            jwt_issuer=env_opt("DOCGEN_JWT_ISSUER"),
            jwt_leeway_s=env_float("DOCGEN_JWT_LEEWAY_S", cls.jwt_leeway_s, minimum=0),
            allowed_origins=env_list("DOCGEN_ALLOWED_ORIGINS", ()),
            allow_missing_origin=env_bool("DOCGEN_ALLOW_NO_ORIGIN", cls.allow_missing_origin),
            heartbeat_s=env_float("DOCGEN_WS_HEARTBEAT_S", cls.heartbeat_s, minimum=0.1),
            max_frame_bytes=env_int("DOCGEN_WS_MAX_FRAME_BYTES", cls.max_frame_bytes, minimum=1024),
            send_queue_frames=env_int("DOCGEN_WS_SEND_QUEUE_FRAMES", cls.send_queue_frames, minimum=16),
            grpc_timeout_s=env_float("DOCGEN_GRPC_TIMEOUT_S", cls.grpc_timeout_s, minimum=0.1),
            stream_timeout_s=env_float("DOCGEN_STREAM_TIMEOUT_S", cls.stream_timeout_s, minimum=1),
        )
