"""gRPC between the services over (mutual) TLS when cert paths are configured, with a CA and a
certificate made in the test."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.env import ConfigError
from services.common.grpc_client import channel
from services.common.grpc_tls import GrpcTls
from tests.support.stack import OUTLINE_3, start_stack


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and one certificate it signed for 127.0.0.1/localhost (server and client use)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("docgen test CA"))
        .issuer_name(_name("docgen test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("docgen service"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "service.pem", directory / "service.key", directory / "ca.pem"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(_pem(key))
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


async def _health(address: str, credentials: grpc.ChannelCredentials | None) -> bool:
    if credentials is None:
        dial = grpc.aio.insecure_channel(address)
    else:
        dial = grpc.aio.secure_channel(address, credentials)
    async with dial:
        try:
            await health_pb2_grpc.HealthStub(dial).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return True


async def test_the_whole_stack_runs_over_mutual_tls(tmp_path: Path) -> None:
    cert, key, ca = make_pki(tmp_path)
    tls = GrpcTls.from_files(cert, key, ca)
    stack = await start_stack(
        summary={"grpc_tls": tls}, generator={"grpc_tls": tls}, edge={"grpc_tls": tls}
    )
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "outline": OUTLINE_3})
        frames = await client.run_to_end()
        assert frames[-1]["status"] == "completed"
        assert any(f["type"] == "summary_update" for f in frames)  # generator -> summary too
        address = stack.generator_addr
        assert await _health(address, tls.channel_credentials())
        assert not await _health(address, None), "plaintext reached a TLS server"
        no_client_cert = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        assert not await _health(address, no_client_cert), "a client without a certificate got in"
    finally:
        await stack.close()


async def test_channel_is_plaintext_unless_tls_is_configured() -> None:
    stack = await start_stack()
    try:
        async with channel(stack.generator_addr) as plain:
            await health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
    finally:
        await stack.close()


def test_tls_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key, ca = make_pki(tmp_path)
    for name in ("DOCGEN_GRPC_TLS_CERT", "DOCGEN_GRPC_TLS_KEY", "DOCGEN_GRPC_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    assert GrpcTls.from_env() is None
    monkeypatch.setenv("DOCGEN_GRPC_TLS_CERT", str(cert))
    with pytest.raises(ConfigError, match="both"):
        GrpcTls.from_env()
    monkeypatch.setenv("DOCGEN_GRPC_TLS_KEY", str(key))
    assert GrpcTls.from_env() == GrpcTls(cert.read_bytes(), key.read_bytes(), None)
    monkeypatch.setenv("DOCGEN_GRPC_TLS_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="DOCGEN_GRPC_TLS_CA"):
        GrpcTls.from_env()
    monkeypatch.setenv("DOCGEN_GRPC_TLS_CA", str(ca))
    assert GrpcTls.from_env() == GrpcTls(cert.read_bytes(), key.read_bytes(), ca.read_bytes())
