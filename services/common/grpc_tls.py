"""TLS between docgen services: certificate paths from the environment, turned into gRPC
channel and server credentials. Unset, services talk plaintext (the loopback default).

`DOCGEN_GRPC_TLS_CERT` and `DOCGEN_GRPC_TLS_KEY` (PEM files) are this service's certificate
and key, used as the server certificate when it listens and as the client certificate when
it dials. `DOCGEN_GRPC_TLS_CA` (PEM) is the CA that signed the peers' certificates: when set,
servers require a client certificate signed by it (mutual TLS) and clients verify servers
against it instead of the system roots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common.env import ConfigError, env_opt


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
