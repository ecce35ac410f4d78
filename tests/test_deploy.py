"""The Kubernetes reference deployment (deploy/kubernetes, docs/deploy.md) stays in step with
the code: every variable it sets is one a service reads, and its timeouts fit together."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").rglob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers(name: str) -> list[dict[str, Any]]:
    for doc in documents():
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] == name:
            return doc["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]
    raise AssertionError(f"no workload {name}")


def env(name: str) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in containers(name)[0].get("env", [])}


def test_every_docgen_variable_in_the_manifests_is_read_by_a_service() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    used = {
        name for path in MANIFESTS for name in re.findall(r"DOCGEN_[A-Z0-9_]+", path.read_text())
    }
    assert used and not {name for name in used if name not in source}


def test_generators_share_redis_and_edges_balance_over_them() -> None:
    generator, edge = env("docgen-generator"), env("docgen-edge")
    assert generator["DOCGEN_RUNLOG_URL"].startswith("redis://")
    assert edge["DOCGEN_GENERATOR_ADDR"].startswith("dns:///")
    assert generator["DOCGEN_SUMMARY_ADDR"].startswith("dns:///")


def test_termination_grace_covers_the_generators_drain_and_grace() -> None:
    generator = env("docgen-generator")
    spec = next(
        d
        for d in documents()
        if d["metadata"]["name"] == "docgen-generator" and d["kind"] == "Deployment"
    )
    period = spec["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = float(generator["DOCGEN_GENERATOR_SHUTDOWN_DRAIN_S"])
    grace = float(generator["DOCGEN_GENERATOR_SHUTDOWN_GRACE_S"])
    assert period > drain + grace


def test_the_ingress_idles_longer_than_the_websocket_heartbeat() -> None:
    ingress = next(d for d in documents() if d["kind"] == "Ingress")
    heartbeat = float(env("docgen-edge")["DOCGEN_WS_HEARTBEAT_S"])
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert (
            float(ingress["metadata"]["annotations"][f"nginx.ingress.kubernetes.io/{key}"])
            > 3 * heartbeat
        )
