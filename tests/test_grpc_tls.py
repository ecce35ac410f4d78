"""gRPC between the services over (mutual) TLS when cert paths are configured, with a CA and a
certificate made in the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from docgen.v1 import generator_pb2, generator_pb2_grpc, outline_pb2
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.env import ConfigError
from services.common.grpc_client import channel
from services.common.grpc_server import require_peer_auth
from services.common.grpc_tls import GrpcTls, PeerAuth
from tests.support.processes import ROOT, free_port, spawn, stop_process
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
    return make_named_pki(directory, {"service": ["127.0.0.1", "localhost"]})["service"]


def make_named_pki(
    directory: Path, leaves: dict[str, list[str]]
) -> dict[str, tuple[Path, Path, Path]]:
    """A CA and, per name, a certificate it signed (common name `name`, the given subject
    alternative names: IPs or DNS names): name -> (cert, key, CA) paths."""
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
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths = {}
    for name, alt_names in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for alt in alt_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(alt)))
            except ValueError:
                sans.append(x509.DNSName(alt))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem(key))
        paths[name] = (cert_path, key_path, ca_path)
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


# --- peer authentication (issue 18, item 5) ----------------------------------------------------

TOKEN = "service-token-" + "t" * 40


async def _start_run(
    address: str, user: str, *, tls: GrpcTls | None = None, auth: PeerAuth | None = None
) -> grpc.StatusCode:
    """What a direct gRPC caller gets when it starts a run as `user` (the report did this with
    plain grpcurl, as any user)."""
    async with channel(address, tls, auth) as dial:
        stub = generator_pb2_grpc.GeneratorServiceStub(dial)
        request = generator_pb2.StartRunRequest(user_id=user, request_id="forged")
        request.outline.CopyFrom(json_format.ParseDict(OUTLINE_3, outline_pb2.Outline()))
        try:
            async for _ in stub.StartRun(request, timeout=10):
                break
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


async def _attach_and_cancel(address: str, run_id: str, user: str) -> list[grpc.StatusCode]:
    codes = []
    async with channel(address) as dial:
        stub = generator_pb2_grpc.GeneratorServiceStub(dial)
        try:
            async for _ in stub.AttachRun(
                generator_pb2.AttachRunRequest(run_id=run_id, user_id=user), timeout=5
            ):
                break
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
        try:
            await stub.CancelRun(
                generator_pb2.CancelRunRequest(run_id=run_id, user_id=user), timeout=5
            )
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    return codes


@pytest.mark.parametrize(
    ("address", "tls", "auth", "starts"),
    [
        ("127.0.0.1:50051", None, None, True),
        ("[::1]:50051", None, None, True),
        ("localhost:50051", None, None, True),
        ("0.0.0.0:50051", None, None, False),
        ("[::]:50051", None, None, False),
        ("10.0.0.7:50051", None, None, False),
        ("0.0.0.0:50051", "tls without CA", None, False),
        ("0.0.0.0:50051", "mutual tls", None, False),  # a CA alone: any cert it signed
        ("0.0.0.0:50051", "mutual tls", PeerAuth(allowed_peers=frozenset({"edge"})), True),
        ("0.0.0.0:50051", None, PeerAuth(service_token=TOKEN), True),
    ],
)
def test_a_server_beyond_loopback_needs_peer_authentication(
    tmp_path: Path, address: str, tls: str | None, auth: PeerAuth | None, starts: bool
) -> None:
    cert, key, ca = make_pki(tmp_path)
    config = {
        None: None,
        "tls without CA": GrpcTls.from_files(cert, key),
        "mutual tls": GrpcTls.from_files(cert, key, ca),
    }[tls]
    if starts:
        require_peer_auth(address, config, auth)
    else:
        with pytest.raises(ConfigError, match="DOCGEN_GRPC_SERVICE_TOKEN"):
            require_peer_auth(address, config, auth)


@pytest.mark.parametrize("module", ["generator", "summary"])
async def test_a_service_process_on_every_interface_without_peer_auth_does_not_start(
    module: str,
) -> None:
    variable = {"generator": "DOCGEN_GENERATOR_ADDR", "summary": "DOCGEN_SUMMARY_ADDR"}[module]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCGEN_GRPC")}
    env[variable] = f"0.0.0.0:{free_port()}"
    process = await spawn(
        sys.executable,
        "-m",
        f"services.{module}",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await stop_process(process)
    assert process.returncode != 0
    assert b"refusing to listen on 0.0.0.0" in stderr


async def test_with_a_service_token_only_callers_that_hold_it_get_in() -> None:
    auth = PeerAuth(service_token=TOKEN)
    stack = await start_stack(
        summary={"grpc_peer_auth": auth},
        generator={"grpc_peer_auth": auth},
        edge={"grpc_peer_auth": auth},
    )
    try:
        victim = await stack.connect(stack.token("victim"))
        await victim.send({"type": "generate", "outline": OUTLINE_3})
        frames = await victim.recv_until(lambda f: f["type"] == "run_started")
        run_id = frames[-1]["run_id"]
        address = stack.generator_addr
        # The report's reproduction: start as anyone, attach to and cancel the victim's run.
        assert await _start_run(address, "victim") == grpc.StatusCode.UNAUTHENTICATED
        assert await _attach_and_cancel(address, run_id, "victim") == [
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.UNAUTHENTICATED,
        ]
        wrong = PeerAuth(service_token="service-token-" + "x" * 40)  # same length
        assert await _start_run(address, "victim", auth=wrong) == grpc.StatusCode.UNAUTHENTICATED
        assert await _health(address, None), "health must stay open to probes"
        frames = await victim.run_to_end()
        assert frames[-1]["status"] == "completed"  # edge -> generator -> summary, with tokens
        assert any(f["type"] == "summary_update" for f in frames)
        assert await _start_run(address, "someone", auth=auth) == grpc.StatusCode.OK
    finally:
        await stack.close()


async def test_with_mutual_tls_only_allowlisted_certificates_get_in(tmp_path: Path) -> None:
    pki = make_named_pki(
        tmp_path,
        {
            "service": ["127.0.0.1", "localhost"],
            "edge": ["edge.docgen.test"],
            "mallory": ["mallory.test"],  # signed by the same CA
        },
    )
    service, edge, mallory = (GrpcTls.from_files(*pki[n]) for n in ("service", "edge", "mallory"))
    stack = await start_stack(
        # The summary admits the generator (the service certificate), the generator the edge.
        summary={"grpc_tls": service, "grpc_peer_auth": PeerAuth(None, frozenset({"localhost"}))},
        generator={"grpc_tls": service, "grpc_peer_auth": PeerAuth(None, frozenset({"edge"}))},
        edge={"grpc_tls": edge},
    )
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "outline": OUTLINE_3})
        frames = await client.run_to_end()
        assert frames[-1]["status"] == "completed"
        assert any(f["type"] == "summary_update" for f in frames)
        address = stack.generator_addr
        assert await _start_run(address, "alice", tls=mallory) == grpc.StatusCode.PERMISSION_DENIED
        assert await _start_run(address, "alice", tls=service) == grpc.StatusCode.PERMISSION_DENIED
        assert await _start_run(address, "alice", tls=edge) == grpc.StatusCode.OK
        assert await _health(address, mallory.channel_credentials())
    finally:
        await stack.close()
