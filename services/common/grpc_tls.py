"""TLS and peer authentication between docgen services: certificate paths from the
environment, turned into gRPC channel and server credentials, and who may call a server
(`PeerAuth`). Unset, services talk plaintext and trust any caller: the loopback default; a
server on any other address refuses to start that way (`services/common/grpc_server.py`).

`DOCGEN_GRPC_TLS_CERT` and `DOCGEN_GRPC_TLS_KEY` (PEM files) are this service's certificate
and key, used as the server certificate when it listens and as the client certificate when
it dials. `DOCGEN_GRPC_TLS_CA` (PEM) is the CA that signed the peers' certificates: when set,
servers require a client certificate signed by it (mutual TLS) and clients verify servers
against it instead of the system roots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.env import ConfigError, env_list, env_opt

SERVICE_TOKEN_METADATA = "x-docgen-service-token"
MIN_SERVICE_TOKEN_BYTES = 32


@dataclass(frozen=True)
class GrpcTls:
    cert_chain: bytes
    """This service's certificate chain, PEM (`DOCGEN_GRPC_TLS_CERT`)."""
    private_key: bytes
    """Its private key, PEM (`DOCGEN_GRPC_TLS_KEY`)."""
    root_ca: bytes | None = None
    """The CA of the peers, PEM (`DOCGEN_GRPC_TLS_CA`); set: mutual TLS."""

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path | None = None) -> GrpcTls:
        return cls(
            cert_chain=_read("DOCGEN_GRPC_TLS_CERT", cert),
            private_key=_read("DOCGEN_GRPC_TLS_KEY", key),
            root_ca=_read("DOCGEN_GRPC_TLS_CA", ca) if ca is not None else None,
        )

    @classmethod
    def from_env(cls) -> GrpcTls | None:
        cert = env_opt("DOCGEN_GRPC_TLS_CERT")
        key = env_opt("DOCGEN_GRPC_TLS_KEY")
        ca = env_opt("DOCGEN_GRPC_TLS_CA")
        if cert is None and key is None:
            if ca is not None:
                raise ConfigError("DOCGEN_GRPC_TLS_CA needs DOCGEN_GRPC_TLS_CERT and _KEY too")
            return None
        if cert is None or key is None:
            raise ConfigError("set both DOCGEN_GRPC_TLS_CERT and DOCGEN_GRPC_TLS_KEY, or neither")
        return cls.from_files(Path(cert), Path(key), Path(ca) if ca else None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_ca,
            private_key=self.private_key,
            certificate_chain=self.cert_chain,
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.root_ca,
            require_client_auth=self.root_ca is not None,
        )


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{variable}={str(path)!r} cannot be read ({error.strerror})") from None


@dataclass(frozen=True)
class PeerAuth:
    """Who may call this service's gRPC server, and what it presents when it dials one. The
    generator believes the `user_id` in a request, so only peers that may act for any user
    (the edge, trusted internal services) may reach it."""

    service_token: str | None = field(default=None, repr=False)
    """A shared secret of at least 32 bytes (`DOCGEN_GRPC_SERVICE_TOKEN`): clients send it
    with every call (metadata `x-docgen-service-token`), servers refuse calls without it
    (UNAUTHENTICATED), compared in constant time. Send it over TLS off loopback."""
    allowed_peers: frozenset[str] = frozenset()
    """Client-certificate identities this server accepts (`DOCGEN_GRPC_ALLOWED_PEERS`, comma
    list of DNS/URI/IP subject alternative names or common names); any other certificate,
    even one signed by `DOCGEN_GRPC_TLS_CA`, gets PERMISSION_DENIED. Needs mutual TLS."""

    @property
    def enabled(self) -> bool:
        return self.service_token is not None or bool(self.allowed_peers)

    @classmethod
    def from_env(cls) -> PeerAuth:
        token = env_opt("DOCGEN_GRPC_SERVICE_TOKEN")
        if token is not None and len(token.encode()) < MIN_SERVICE_TOKEN_BYTES:
            raise ConfigError(
                f"DOCGEN_GRPC_SERVICE_TOKEN must be at least {MIN_SERVICE_TOKEN_BYTES} bytes"
            )
        peers = frozenset(env_list("DOCGEN_GRPC_ALLOWED_PEERS", ()))
        if peers and env_opt("DOCGEN_GRPC_TLS_CA") is None:
            raise ConfigError(
                "DOCGEN_GRPC_ALLOWED_PEERS names client certificates: it needs mutual TLS "
                "(DOCGEN_GRPC_TLS_CERT, _KEY and _CA)"
            )
        return cls(service_token=token, allowed_peers=peers)

    def outgoing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((SERVICE_TOKEN_METADATA, self.service_token),) if self.service_token else ()
