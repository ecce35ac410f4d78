#!/usr/bin/env python3
"""Health probe of a docgen service, for Docker's HEALTHCHECK and Kubernetes exec probes.

    docgen-healthcheck                  # the service this container runs (PID 1's command line)
    docgen-healthcheck --http 8080 /healthz
    docgen-healthcheck --grpc 50051     # grpc.health.v1 Check, over TLS when configured

Why not Kubernetes' native gRPC probe: the kubelet's probe speaks plaintext only, and with
mutual TLS on (`DOCGEN_GRPC_TLS_CERT`/`_KEY`/`_CA`) the generator and summary refuse
plaintext. This probe dials `localhost` with the service's own certificate (so its
certificate must name `localhost` too, see docs/deploy.md). Exit 0: serving; 1: anything else,
with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from pathlib import Path

TIMEOUT_S = 3.0
# What each service listens on, as the services read it (services/*/settings.py).
DEFAULTS = {
    "services.edge": ("http", "DOCGEN_EDGE_PORT", "8080"),
    "services.generator": ("grpc", "DOCGEN_GENERATOR_ADDR", "127.0.0.1:50051"),
    "services.summary": ("grpc", "DOCGEN_SUMMARY_ADDR", "127.0.0.1:50052"),
}


def check_http(port: int, path: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT_S) as answer:
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}")


def check_grpc(port: int) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.common.grpc_tls import GrpcTls

    tls = GrpcTls.from_env()
    target = f"localhost:{port}"
    dial = (
        grpc.insecure_channel(target)
        if tls is None
        else grpc.secure_channel(target, tls.channel_credentials())
    )
    with dial:
        answer = health_pb2_grpc.HealthStub(dial).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
        )
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def running_service(cmdline: Path = Path("/proc/1/cmdline")) -> str:
    """The docgen module PID 1 runs: in a container, the service itself."""
    argv = cmdline.read_bytes().split(b"\0")
    for module in DEFAULTS:
        if module.encode() in argv:
            return module
    raise RuntimeError("PID 1 is not a docgen service; pass --http or --grpc")


def main() -> int:
    parser = argparse.ArgumentParser(prog="docgen-healthcheck")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--http", nargs=2, metavar=("PORT", "PATH"))
    mode.add_argument("--grpc", type=int, metavar="PORT")
    args = parser.parse_args()
    try:
        if args.http:
            check_http(int(args.http[0]), args.http[1])
        elif args.grpc:
            check_grpc(args.grpc)
        else:
            kind, variable, default = DEFAULTS[running_service()]
            port = int(os.environ.get(variable, default).rsplit(":", 1)[-1])
            check_http(port, "/healthz") if kind == "http" else check_grpc(port)
    except Exception as error:  # any failure is "unhealthy", reported in one line
        reason = " ".join(str(error).split())  # gRPC errors span lines; a probe log wants one
        print(f"unhealthy: {type(error).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
