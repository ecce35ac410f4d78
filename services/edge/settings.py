"""Edge configuration, read once from the environment."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.common.defaults import EDGE_HOST, EDGE_PORT, GENERATOR_ADDR, JWT_AUDIENCE
from services.common.env import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_opt,
    env_str,
)
from services.common.grpc_tls import GrpcTls, PeerAuth
from services.common.loopback import is_loopback

log = logging.getLogger(__name__)

# Publicly known on purpose: only for local development, and the edge says so loudly. It is
# refused outright when the edge listens on anything but loopback.
DEV_JWT_SECRET = "docgen-dev-secret-for-local-use-only-0123456789"
MIN_SECRET_BYTES = 32
# A secret holding one of these was copied from an example (deploy/kubernetes/
# secret.example.yaml's "replace-with-at-least-32-random-bytes-....") and is as public as the
# dev secret: refused whatever the bind address.
PLACEHOLDER_MARKERS = ("replace", "change-me", "changeme", "placeholder", "example", "....")
DEV_TOKEN_TTL_S = 3600
"""Lifetime of development tokens (`make token`, the CLI, the `make run` banner): one hour."""


@dataclass(frozen=True)
class EdgeSettings:
    host: str = EDGE_HOST
    """Listen host (`DOCGEN_EDGE_HOST`)."""
    port: int = EDGE_PORT
    """Listen port (`DOCGEN_EDGE_PORT`)."""
    reuse_port: bool = False
    """Listen with SO_REUSEPORT (`DOCGEN_EDGE_REUSE_PORT`): several edge processes on one host
    share the port and the kernel spreads new connections over them, one core each
    (docs/operations.md, "Several cores")."""
    generator_addr: str = GENERATOR_ADDR
    """Generator to dial (`DOCGEN_GENERATOR_ADDR`)."""
    event_stream: bool = True
    """Receive the events of all runs over one multiplexed gRPC stream per generator channel
    (`OpenEventStream`, docs/grpc.md) instead of one stream per run (`DOCGEN_EDGE_EVENT_STREAM`;
    0: every run's events on its own call, as before)."""
    jwt_secret: str | None = DEV_JWT_SECRET
    """HS256 key (`DOCGEN_JWT_SECRET`), at least 32 bytes unless `DOCGEN_DEV_MODE=1`. Unset:
    the public dev secret with a loud warning, or, when a JWKS is configured, no HS256 at all
    (None)."""
    dev_mode: bool = False
    """Development conveniences that weaken security, each logged as a warning: an HS256
    secret shorter than 32 bytes (`DOCGEN_DEV_MODE`)."""
    jwks_urls: tuple[tuple[str | None, str], ...] = ()
    """(issuer, JWKS URL) pairs for RS256/ES256 tokens: `DOCGEN_JWT_JWKS_URLS='iss1=url1,
    iss2=url2'`, or one `DOCGEN_JWT_JWKS_URL` for `DOCGEN_JWT_ISSUER` (issuer None: any `iss`,
    unchecked). A token's keys are looked up by its `iss` and then its `kid`."""
    jwks_cache_s: float = 300.0
    """How long a fetched JWKS is used before it is fetched again (`DOCGEN_JWT_JWKS_CACHE_S`)."""
    jwks_min_refresh_s: float = 30.0
    """A token with an unknown `kid` refetches the JWKS at most this often per issuer, so
    forged kids cannot hammer the identity provider (`DOCGEN_JWT_JWKS_MIN_REFRESH_S`)."""
    jwks_timeout_s: float = 5.0
    """Timeout of one JWKS fetch (`DOCGEN_JWT_JWKS_TIMEOUT_S`)."""
    jwt_audience: str = JWT_AUDIENCE
    """Required `aud` (`DOCGEN_JWT_AUDIENCE`)."""
    jwt_issuer: str | None = None
    """Required `iss` when set (`DOCGEN_JWT_ISSUER`)."""
    jwt_leeway_s: float = 30.0
    """Clock skew allowed on `exp`/`nbf`/`iat` (`DOCGEN_JWT_LEEWAY_S`)."""
    allowed_origins: tuple[str, ...] = ()
    """Exact Origin values allowed (`DOCGEN_ALLOWED_ORIGINS`); default: the edge's own."""
    allow_missing_origin: bool = True
    """Accept handshakes without Origin, i.e. non-browser clients (`DOCGEN_ALLOW_NO_ORIGIN`).
    Browsers always send Origin on a WebSocket handshake, so a browser-style request (one with
    `Sec-Fetch-*` headers) without it is refused regardless."""
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
    frames_per_s: float = 10.0
    """Client frames accepted per second per socket, sustained (`DOCGEN_WS_FRAMES_PER_S`);
    a frame over the budget is dropped and answered with `rate_limited`."""
    frame_burst: int = 30
    """Client frames a socket may send at once before the per-second budget applies
    (`DOCGEN_WS_FRAME_BURST`)."""
    flood_close_after: int = 50
    """Frames dropped in a row for the rate limit before the socket is closed with 4501
    (`DOCGEN_WS_FLOOD_CLOSE_AFTER`)."""
    max_sockets_per_user: int = 16
    """Open sockets per user (JWT `sub`); more are refused with 429 before the upgrade
    (`DOCGEN_WS_MAX_SOCKETS_PER_USER`, 0: no limit)."""
    max_sockets_per_ip: int = 64
    """Open sockets per client IP as the edge sees it (the proxy's, behind one); more are
    refused with 429 before the upgrade (`DOCGEN_WS_MAX_SOCKETS_PER_IP`, 0: no limit)."""
    max_header_bytes: int = 8190
    """Longest HTTP request line and header field; longer ones are answered 400 by aiohttp
    before any handler runs (`DOCGEN_HTTP_MAX_HEADER_BYTES`)."""
    header_timeout_s: float = 10.0
    """A connection must send a request's complete headers within this long of opening, or of
    its previous response (aiohttp's keep-alive timeout is set to it too); otherwise it gets
    `408` and is closed (`DOCGEN_HTTP_HEADER_TIMEOUT_S`)."""
    max_pending_per_ip: int = 64
    """Connections per client IP not yet authenticated (before their WebSocket handshake is
    accepted: half-sent requests, plain HTTP keep-alives); one more gets `429` and is closed
    before any byte is read (`DOCGEN_HTTP_MAX_PENDING_PER_IP`, 0: no limit; set 0 behind a
    proxy, where every client has the proxy's address)."""
    metrics_port: int = 9100
    """Prometheus /metrics port, 0 to disable (`DOCGEN_EDGE_METRICS_PORT`). Its own port, like
    the generator's 9101 and the summary's 9102: the public port (the one the Ingress routes)
    answers /metrics with 404."""
    metrics_host: str = "127.0.0.1"
    """Address of the /metrics port (`DOCGEN_EDGE_METRICS_HOST`); loopback by default. In a
    pod, the pod's address (`0.0.0.0`) lets Prometheus in; no Service or Ingress routes it."""
    access_log: bool = False
    """One redacted line per HTTP request (path without query, status, time): never a
    header, query string or token (`DOCGEN_EDGE_ACCESS_LOG`)."""
    grpc_tls: GrpcTls | None = None
    """TLS to the generator (`DOCGEN_GRPC_TLS_CERT`/`_KEY`/`_CA`); None: plaintext."""
    grpc_peer_auth: PeerAuth | None = None
    """The service token sent with every call to the generator (`DOCGEN_GRPC_SERVICE_TOKEN`)."""

    @property
    def uses_dev_secret(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    @property
    def any_origin(self) -> bool:
        """`DOCGEN_ALLOWED_ORIGINS=*`: every Origin is accepted (only when set explicitly)."""
        return "*" in self.allowed_origins

    @property
    def origins(self) -> frozenset[str]:
        if self.allowed_origins:
            return frozenset(self.allowed_origins)
        return frozenset({f"http://{self.host}:{self.port}", f"http://localhost:{self.port}"})

    @classmethod
    def from_env(cls) -> EdgeSettings:
        dev_mode = env_bool("DOCGEN_DEV_MODE", cls.dev_mode)
        issuer = env_opt("DOCGEN_JWT_ISSUER")
        jwks_urls = _jwks_urls(issuer)
        secret = env_opt("DOCGEN_JWT_SECRET")
        # With a JWKS and no secret, HS256 is off: the public dev secret never sits beside
        # real keys.
        if secret is None and not jwks_urls:
            log.warning(
                "DOCGEN_JWT_SECRET is not set: using the public development secret. "
                "Anyone can mint tokens for this edge; set a secret of >= %d bytes in production.",
                MIN_SECRET_BYTES,
            )
            secret = DEV_JWT_SECRET
        elif secret is not None and any(m in secret.lower() for m in PLACEHOLDER_MARKERS):
            raise ConfigError(
                "DOCGEN_JWT_SECRET is still the example's placeholder: set it to at least "
                f"{MIN_SECRET_BYTES} random bytes (openssl rand -base64 48)"
            )
        elif secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            if not dev_mode:
                raise ConfigError(
                    f"DOCGEN_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long "
                    "(DOCGEN_DEV_MODE=1 allows a shorter one for local development)"
                )
            log.warning(
                "DOCGEN_DEV_MODE=1: accepting a DOCGEN_JWT_SECRET shorter than %d bytes; "
                "tokens signed with it can be brute-forced. Never do this in production.",
                MIN_SECRET_BYTES,
            )
        host = env_str("DOCGEN_EDGE_HOST", cls.host)
        if secret == DEV_JWT_SECRET and not is_loopback(host):
            raise ConfigError(
                f"DOCGEN_EDGE_HOST={host!r} is reachable from other machines, and "
                "DOCGEN_JWT_SECRET is unset (or the public development secret): anyone could "
                "mint tokens. Set DOCGEN_JWT_SECRET (or a JWKS), or listen on 127.0.0.1"
            )
        allowed_origins = env_list("DOCGEN_ALLOWED_ORIGINS", ())
        if "*" in allowed_origins:
            log.warning("DOCGEN_ALLOWED_ORIGINS=*: any web page may open sockets to this edge")
        return cls(
            host=host,
            port=env_int("DOCGEN_EDGE_PORT", cls.port, minimum=0),
            generator_addr=env_str("DOCGEN_GENERATOR_ADDR", cls.generator_addr),
            jwt_secret=secret,
            dev_mode=dev_mode,
            jwks_urls=jwks_urls,
            jwks_cache_s=env_float("DOCGEN_JWT_JWKS_CACHE_S", cls.jwks_cache_s, minimum=1),
            jwks_min_refresh_s=env_float(
                "DOCGEN_JWT_JWKS_MIN_REFRESH_S", cls.jwks_min_refresh_s, minimum=0
            ),
            jwks_timeout_s=env_float("DOCGEN_JWT_JWKS_TIMEOUT_S", cls.jwks_timeout_s, minimum=0.1),
            jwt_audience=env_str("DOCGEN_JWT_AUDIENCE", cls.jwt_audience),
            jwt_issuer=issuer,
            jwt_leeway_s=env_float("DOCGEN_JWT_LEEWAY_S", cls.jwt_leeway_s, minimum=0),
            allowed_origins=allowed_origins,
            allow_missing_origin=env_bool("DOCGEN_ALLOW_NO_ORIGIN", cls.allow_missing_origin),
            heartbeat_s=env_float("DOCGEN_WS_HEARTBEAT_S", cls.heartbeat_s, minimum=0.1),
            max_frame_bytes=env_int("DOCGEN_WS_MAX_FRAME_BYTES", cls.max_frame_bytes, minimum=1024),
            send_queue_frames=env_int(
                "DOCGEN_WS_SEND_QUEUE_FRAMES", cls.send_queue_frames, minimum=16
            ),
            grpc_timeout_s=env_float("DOCGEN_GRPC_TIMEOUT_S", cls.grpc_timeout_s, minimum=0.1),
            stream_timeout_s=env_float("DOCGEN_STREAM_TIMEOUT_S", cls.stream_timeout_s, minimum=1),
            frames_per_s=env_float("DOCGEN_WS_FRAMES_PER_S", cls.frames_per_s, minimum=0.1),
            frame_burst=env_int("DOCGEN_WS_FRAME_BURST", cls.frame_burst, minimum=1),
            flood_close_after=env_int(
                "DOCGEN_WS_FLOOD_CLOSE_AFTER", cls.flood_close_after, minimum=1
            ),
            max_sockets_per_user=env_int(
                "DOCGEN_WS_MAX_SOCKETS_PER_USER", cls.max_sockets_per_user, minimum=0
            ),
            max_sockets_per_ip=env_int(
                "DOCGEN_WS_MAX_SOCKETS_PER_IP", cls.max_sockets_per_ip, minimum=0
            ),
            max_header_bytes=env_int(
                "DOCGEN_HTTP_MAX_HEADER_BYTES", cls.max_header_bytes, minimum=1024
            ),
            header_timeout_s=env_float(
                "DOCGEN_HTTP_HEADER_TIMEOUT_S", cls.header_timeout_s, minimum=0.1
            ),
            max_pending_per_ip=env_int(
                "DOCGEN_HTTP_MAX_PENDING_PER_IP", cls.max_pending_per_ip, minimum=0
            ),
            metrics_port=env_int("DOCGEN_EDGE_METRICS_PORT", cls.metrics_port, minimum=0),
            metrics_host=env_str("DOCGEN_EDGE_METRICS_HOST", cls.metrics_host),
            access_log=env_bool("DOCGEN_EDGE_ACCESS_LOG", cls.access_log),
            reuse_port=env_bool("DOCGEN_EDGE_REUSE_PORT", cls.reuse_port),
            event_stream=env_bool("DOCGEN_EDGE_EVENT_STREAM", cls.event_stream),
            grpc_tls=GrpcTls.from_env(),
            grpc_peer_auth=PeerAuth.from_env(),
        )


def _jwks_urls(issuer: str | None) -> tuple[tuple[str | None, str], ...]:
    """`DOCGEN_JWT_JWKS_URLS` (issuer=url pairs) or `DOCGEN_JWT_JWKS_URL` (for `issuer`)."""
    single = env_opt("DOCGEN_JWT_JWKS_URL")
    pairs = env_list("DOCGEN_JWT_JWKS_URLS", ())
    if single and pairs:
        raise ConfigError("set DOCGEN_JWT_JWKS_URL or DOCGEN_JWT_JWKS_URLS, not both")
    if single:
        if issuer is None:
            log.warning(
                "DOCGEN_JWT_JWKS_URL without DOCGEN_JWT_ISSUER: any issuer's token signed by a "
                "key of that JWKS is accepted; set the issuer"
            )
        return ((issuer, single),)
    parsed: list[tuple[str | None, str]] = []
    for pair in pairs:
        name, _, url = pair.partition("=")
        if not name.strip() or not url.strip():
            raise ConfigError(f"DOCGEN_JWT_JWKS_URLS: {pair!r} is not issuer=url")
        parsed.append((name.strip(), url.strip()))
    if len({name for name, _ in parsed}) != len(parsed):
        raise ConfigError("DOCGEN_JWT_JWKS_URLS names an issuer twice")
    return tuple(parsed)


def dev_token_signing() -> tuple[str, str]:
    """The HS256 secret and audience that development tokens (`make token`, the CLI, the
    `make run` banner) are signed with, read as the edge reads them: `DOCGEN_JWT_SECRET`, else
    the public dev secret; `DOCGEN_JWT_AUDIENCE`."""
    secret = env_opt("DOCGEN_JWT_SECRET") or DEV_JWT_SECRET
    return secret, env_str("DOCGEN_JWT_AUDIENCE", EdgeSettings.jwt_audience)
