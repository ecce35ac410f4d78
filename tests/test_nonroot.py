"""The three services run the way the Kubernetes pods run them (deploy/kubernetes): as an
unprivileged user (the image's UID/GID 10001) with a fresh HOME and a working tree it cannot
write, with the environment of the manifests (secrets as `*_FILE` mounts, mutual TLS between
the services, the run log in Redis behind the manifests' ACL user), probed by the image's
health check, and a run streams through them end to end against the scripted LLM."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
import psutil
import pytest
import redis
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import (
    SESSION_MARKER,
    STARTED_BY,
    free_port,
    spawn,
    stop_popen,
    stop_process,
)
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import OUTLINE_3, ProtocolClient

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
UID = GID = 10001  # deploy/Dockerfile's USER, the pods' runAsUser
AS_ROOT = os.geteuid() == 0
SECRETS_IN_POD = "/var/run/secrets/docgen/"
ORIGIN = "https://docgen.example.com"


def q(path: Path) -> str:
    return shlex.quote(str(path))


TEXT = "Ovens need space. Dough needs time. Money needs care."

pytestmark = pytest.mark.timeout(300)


def manifest_container(workload: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, first container) of a Deployment in deploy/kubernetes."""
    for path in KUBE.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == workload:
                pod = doc["spec"]["template"]["spec"]
                return pod, pod["containers"][0]
    raise AssertionError(workload)


def manifest_env(workload: str) -> dict[str, str]:
    """The container environment of a Deployment."""
    return {e["name"]: e["value"] for e in manifest_container(workload)[1]["env"]}


def manifest_secret_files(workload: str) -> list[tuple[str, str, str]]:
    """(Secret, key, path in the pod) of every file the Deployment's projected `secrets`
    volume mounts."""
    pod, container = manifest_container(workload)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    return [
        (source["secret"]["name"], item["key"], f"{mount['mountPath']}/{item['path']}")
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    ]


def service_pki() -> dict[str, dict[str, bytes]]:
    """The three TLS Secrets of optional/cert-manager.yaml: one CA, one certificate per
    service named after it (the identity DOCGEN_GRPC_ALLOWED_PEERS lists), also valid for
    localhost and 127.0.0.1 (the health probe's and this test's addresses)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "docgen internal CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    secrets_by_name = {}
    for service in ("docgen-edge", "docgen-generator", "docgen-summary"):
        key = ec.generate_private_key(ec.SECP256R1())
        names = [
            x509.DNSName(service),
            x509.DNSName(f"{service}.docgen.svc.cluster.local"),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        secrets_by_name[f"{service}-tls"] = {
            "tls.crt": cert.public_bytes(serialization.Encoding.PEM),
            "tls.key": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        }
    return secrets_by_name


def redis_acl(password: str) -> str:
    """The manifests' Redis ACL file (secret.example.yaml), with this password's hash."""
    docs = yaml.safe_load_all((KUBE / "secret.example.yaml").read_text())
    acl: str = next(d for d in docs if d["metadata"]["name"] == "docgen-redis-acl")["stringData"][
        "users.acl"
    ]
    digest = hashlib.sha256(password.encode()).hexdigest()
    return re.sub(r"#[0-9a-f]{64}", f"#{digest}", acl)


def redis_probe() -> str:
    """The shell command of the Redis StatefulSet's readiness probe."""
    doc = next(
        d
        for d in yaml.safe_load_all((KUBE / "redis.yaml").read_text())
        if d["kind"] == "StatefulSet"
    )
    command: list[str] = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"][
        "command"
    ]
    assert command[:2] == ["sh", "-c"]
    return command[2]


def hidden_ancestor(path: Path) -> Path | None:
    """The first folder above `path` that other users cannot enter (e.g. /root, 0700, when
    Python was installed under it by pyenv), or None."""
    for folder in reversed(path.parents):
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


@dataclass
class Sandbox:
    home: Path
    secrets: Path
    stash: Path

    def unprivileged(self, *argv: str | Path) -> list[str]:
        """argv as UID/GID 10001, no supplementary groups, no way to gain privileges, in its
        own mount namespace where the working tree (and the venv in it) is mounted read-only,
        as in the image. A folder that hides the Python installation from other users
        (pyenv's under /root here) is covered with an empty tmpfs in that namespace, and the
        installation alone is mounted back into it, read-only: what a container's
        world-readable /usr/local is. A non-root caller is unprivileged already and runs
        argv as is."""
        if not AS_ROOT:
            return list(map(str, argv))
        python = Path(sys.base_prefix)
        steps = []
        if (hidden := hidden_ancestor(python)) is not None:
            steps += [
                f"mount --bind {q(python)} {q(self.stash)}",
                f"mount -t tmpfs -o mode=755,size=1m docgen-test {q(hidden)}",
                f"mkdir -p {q(python)}",
                f"mount --bind {q(self.stash)} {q(python)}",
                f"mount -o remount,bind,ro {q(python)}",
            ]
        steps += [
            f"mount --bind {q(ROOT)} {q(ROOT)}",
            f"mount -o remount,bind,ro {q(ROOT)}",
            f'exec setpriv --reuid={UID} --regid={GID} --clear-groups --no-new-privs "$@"',
        ]
        script = "set -e\n" + "\n".join(steps)
        namespace = ["unshare", "--mount", "--propagation", "private"]
        return [*namespace, "sh", "-c", script, "sh", *map(str, argv)]

    def env(self, settings: dict[str, str]) -> dict[str, str]:
        """A clean environment, as in a container: PATH, the fresh HOME, the suite's process
        markers (for its leftover guard) and the given settings."""
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "TMPDIR": str(self.home),
            "LANG": "C.UTF-8",
        }
        markers = {k: os.environ[k] for k in (SESSION_MARKER, STARTED_BY) if k in os.environ}
        return {**base, **markers, **settings}

    def mount_secrets(self, workload: str, data: dict[str, dict[str, bytes]]) -> None:
        """What the Deployment's `secrets` volume mounts, from the Secrets' `data`, into this
        pod's own folder: readable by the pod's group only, like a projected volume with
        fsGroup and mode 0440."""
        folder = self.secrets / workload
        for secret, key, path in manifest_secret_files(workload):
            file = folder / path.removeprefix(SECRETS_IN_POD)
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data[secret][key])
            file.chmod(0o440)
        for entry in [folder, *folder.rglob("*")]:
            if entry.is_dir():
                entry.chmod(0o750)
            if AS_ROOT:
                os.chown(entry, 0, GID)

    def in_pod(self, workload: str) -> dict[str, str]:
        """The Deployment's environment, its paths of mounted secrets pointed at this pod's
        copies."""
        folder = self.secrets / workload
        return {
            k: str(folder / v.removeprefix(SECRETS_IN_POD)) if v.startswith(SECRETS_IN_POD) else v
            for k, v in manifest_env(workload).items()
        }


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    base = Path(tempfile.mkdtemp(prefix="docgen-nonroot-"))
    try:
        base.chmod(0o755)
        home, secret_dir, stash = base / "home", base / "secrets", base / "python"
        home.mkdir(mode=0o700)
        stash.mkdir()
        secret_dir.mkdir()
        if AS_ROOT:
            os.chown(home, UID, GID)
        yield Sandbox(home, secret_dir, stash)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def acl_redis(sandbox: Sandbox, password: str) -> Iterator[int]:
    acl = sandbox.secrets.parent / "users.acl"
    acl.write_text(redis_acl(password))
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--aclfile", str(acl), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        probe = redis_probe().replace("redis-cli ", f"redis-cli -p {port} ", 1)
        deadline = time.monotonic() + 30
        while subprocess.run(["sh", "-c", probe], capture_output=True).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)
        yield port
    finally:
        stop_popen(server)


async def healthy(sandbox: Sandbox, env: dict[str, str], *probe: str) -> tuple[int, str]:
    """Runs the image's health check (deploy/healthcheck.py) as the unprivileged user."""
    process = await asyncio.create_subprocess_exec(
        *sandbox.unprivileged(sys.executable, HEALTHCHECK, *probe),
        cwd=ROOT,
        env=sandbox.env(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def start_service(
    stack: contextlib.AsyncExitStack,
    sandbox: Sandbox,
    module: str,
    env: dict[str, str],
    *probe: str,
) -> asyncio.subprocess.Process:
    """Starts `python -m services.<module>` unprivileged and waits until the image's health
    check passes, as a readiness probe would."""
    log = sandbox.home.parent / f"{module}.log"
    with log.open("wb") as stderr:
        process = await spawn(
            *sandbox.unprivileged(sys.executable, "-m", f"services.{module}"),
            cwd=ROOT,
            env=sandbox.env(env),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    stack.push_async_callback(stop_process, process)
    deadline = time.monotonic() + 90  # a cold start on a loaded 2-core machine
    while (answer := await healthy(sandbox, env, *probe))[0] != 0:
        if process.returncode is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{module} did not become healthy: {answer[1]}\n{tail}")
        await asyncio.sleep(0.2)
    return process


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    server = ScriptedLLM(lambda _n, _body: Reply(tokens=words(TEXT)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_the_services_run_unprivileged_as_in_the_pods(
    sandbox: Sandbox, llm: ScriptedLLM
) -> None:
    # The working tree is read-only for the services' user (the checkout belongs to someone
    # else), as the image's is.
    check = "import os, sys; sys.exit(any(os.access(p, os.W_OK) for p in sys.argv[1:]))"
    writable = await asyncio.create_subprocess_exec(
        *sandbox.unprivileged(sys.executable, "-c", check, ROOT, ROOT / "services", ROOT / "gen"),
        env=sandbox.env({}),
    )
    await writable.wait()
    # A non-root caller owns its checkout and cannot mount it read-only: that part needs root.
    assert writable.returncode == 0 or not AS_ROOT, "the working tree is writable"

    jwt_secret, llm_key, redis_password = (secrets.token_urlsafe(48) for _ in range(3))
    with acl_redis(sandbox, redis_password) as redis_port:
        data = service_pki() | {
            "docgen-secrets": {
                "jwt-secret": f"{jwt_secret}\n".encode(),  # as `echo ... > file` writes it
                "llm-api-key": llm_key.encode(),
                "runlog-url": f"redis://docgen:{redis_password}@127.0.0.1:{redis_port}/0".encode(),
            }
        }
        for workload in ("docgen-edge", "docgen-generator", "docgen-summary"):
            sandbox.mount_secrets(workload, data)
        summary_port, generator_port, edge_port = free_port(), free_port(), free_port()
        # The manifests' environments, with loopback addresses for the cluster's names, the
        # scripted LLM, no drain on stop and no fixed metrics ports (tests run side by side).
        summary_env = sandbox.in_pod("docgen-summary") | {
            "DOCGEN_SUMMARY_ADDR": f"127.0.0.1:{summary_port}",
            "DOCGEN_SUMMARY_METRICS_PORT": "0",
        }
        generator_env = sandbox.in_pod("docgen-generator") | {
            "DOCGEN_GENERATOR_ADDR": f"127.0.0.1:{generator_port}",
            "DOCGEN_SUMMARY_ADDR": f"127.0.0.1:{summary_port}",
            "DOCGEN_LLM_BASE_URL": llm.base_url,
            "DOCGEN_GENERATOR_SHUTDOWN_DRAIN_S": "0",
            "DOCGEN_GENERATOR_SHUTDOWN_GRACE_S": "1",
            "DOCGEN_GENERATOR_METRICS_PORT": "0",
        }
        edge_env = sandbox.in_pod("docgen-edge") | {
            "DOCGEN_EDGE_HOST": "127.0.0.1",
            "DOCGEN_EDGE_PORT": str(edge_port),
            "DOCGEN_EDGE_METRICS_PORT": "0",
            "DOCGEN_GENERATOR_ADDR": f"127.0.0.1:{generator_port}",
        }
        assert not any(k.endswith(("_SECRET", "_API_KEY")) for k in {**generator_env, **edge_env})

        async with contextlib.AsyncExitStack() as stack:
            services = await asyncio.gather(
                start_service(stack, sandbox, "summary", summary_env, "--grpc", str(summary_port)),
                start_service(
                    stack, sandbox, "generator", generator_env, "--grpc", str(generator_port)
                ),
                start_service(
                    stack, sandbox, "edge", edge_env, "--http", str(edge_port), "/readyz"
                ),
            )
            for process in services:
                assert psutil.Process(process.pid).uids().effective == (
                    UID if AS_ROOT else os.geteuid()
                )

            # gRPC is mutual TLS: a plaintext health check (the kubelet's native probe) is
            # refused, as is a client without a certificate of the CA.
            plain = {k: v for k, v in generator_env.items() if "TLS" not in k}
            code, why = await healthy(sandbox, plain, "--grpc", str(generator_port))
            assert code == 1 and why.startswith("unhealthy"), why

            # Of the CA's certificates, only the edges' may call a generator (the manifest's
            # DOCGEN_GRPC_ALLOWED_PEERS): a summary's is refused before any handler runs.
            cancel = f"127.0.0.1:{generator_port}", "/docgen.v1.GeneratorService/CancelRun"
            refused = await grpc_answer(*cancel, data["docgen-summary-tls"])
            assert refused[0] == grpc.StatusCode.PERMISSION_DENIED, refused
            assert await grpc_code(*cancel, data["docgen-edge-tls"]) not in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.UNAVAILABLE,
            )

            frames = await stream_one_run(edge_port, jwt_secret)

            assert frames[-1]["type"] == "run_end" and frames[-1]["status"] == "completed"
            sections = [f for f in frames if f["type"] == "section_end"]
            assert [f["section_id"] for f in sections] == ["intro", "ovens", "money"]  # OUTLINE_3
            assert any(f["type"] == "summary_update" for f in frames)
            # The LLM key came from its file; the run log went to Redis as the ACL user.
            assert llm.requests and all(
                r.headers.get("Authorization") == f"Bearer {llm_key}" for r in llm.requests
            )
            run_id = frames[-1]["run_id"]
            store = redis.Redis(
                port=redis_port, username="docgen", password=redis_password, decode_responses=True
            )
            with store:
                keys = list(store.scan_iter(match=f"docgen:run:*{run_id}*"))
                assert keys, "the run was not stored in Redis"
            with pytest.raises(redis.AuthenticationError), redis.Redis(port=redis_port) as anon:
                anon.ping()


async def grpc_code(address: str, method: str, tls: dict[str, bytes]) -> grpc.StatusCode:
    return (await grpc_answer(address, method, tls))[0]


async def grpc_answer(
    address: str, method: str, tls: dict[str, bytes]
) -> tuple[grpc.StatusCode, str]:
    """The status of one unary call (an empty request) made with this TLS Secret's
    certificate."""
    credentials = grpc.ssl_channel_credentials(tls["ca.crt"], tls["tls.key"], tls["tls.crt"])
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
            await call(b"", timeout=20)
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def stream_one_run(edge_port: int, jwt_secret: str) -> list[dict[str, Any]]:
    now = int(time.time())
    token = jwt.encode(
        {"sub": "alice", "aud": "docgen", "iat": now, "exp": now + 600}, jwt_secret, "HS256"
    )
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{edge_port}/v1/ws",
            protocols=("docgen.v1", f"bearer.{token}"),
            headers={"Origin": ORIGIN},
        )
        client = ProtocolClient(session, ws)
        await client.send({"type": "generate", "outline": OUTLINE_3, "request_id": "r1"})
        return await client.run_to_end(timeout=90)
    finally:
        await session.close()
