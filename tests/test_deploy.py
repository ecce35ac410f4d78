"""The Kubernetes reference deployment (deploy/, docs/deploy.md) stays in step with the code
and passes outside checks: Kubernetes' own schemas (kubernetes-validate, strict, a pinned
Kubernetes version) and an infrastructure-as-code scanner (checkov) with nothing failing
outside the skip list documented in docs/deploy.md; plus what the scanners cannot see: the
network policies allow exactly the documented paths, every secret is a mounted file, and the
image is built from what the package build reads."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").rglob("*.yaml"))
BIN = Path(sys.executable).parent
# checkov has a venv of its own (Makefile: its dependencies must not enter the test venv).
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
KUBERNETES_VERSION = "1.31.0"
NAMESPACE = "docgen"
# Not Kubernetes' own kinds: kubernetes-validate has no schema for them.
NOT_BUILT_IN = {
    "kustomize.config.k8s.io/v1beta1/Kustomization",
    "cert-manager.io/v1/Issuer",
    "cert-manager.io/v1/Certificate",
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
SKIPS_START, SKIPS_END = "<!-- checkov-skips:start -->", "<!-- checkov-skips:end -->"


@cache
def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def objects() -> list[dict[str, Any]]:
    """Everything kubectl would create (not the kustomization file itself)."""
    return [doc for doc in documents() if doc["kind"] != "Kustomization"]


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] in WORKLOAD_KINDS]


def workload(name: str) -> dict[str, Any]:
    for doc in workloads():
        if doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no workload {name}")


def containers(name: str) -> list[dict[str, Any]]:
    return workload(name)["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def env(name: str) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in containers(name)[0].get("env", [])}


# --- the outside tools --------------------------------------------------------------------


def test_kubernetes_validate_strict_passes_every_manifest() -> None:
    done = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, *MANIFESTS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    passed = re.findall(r"^INFO .* passed for resource (\S+) against", output, re.M)
    missing = re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+) ", output)
    built_in = [d for d in documents() if f"{d['apiVersion']}/{d['kind']}" not in NOT_BUILT_IN]
    assert len(passed) == len(built_in), output
    assert {f"{api}/{kind}" for kind, api in missing} <= NOT_BUILT_IN, output
    assert not re.search(r"^(ERROR|WARN)(?!.*Couldn't find schema)", output, re.M), output


def documented_skips() -> list[tuple[str, str, str]]:
    """(check id, file glob relative to deploy/, reason) rows of docs/deploy.md's skip list."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    table = text.split(SKIPS_START, 1)[1].split(SKIPS_END, 1)[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        check, files, reason = cells[0].strip("`"), cells[1].strip("`"), cells[2]
        assert len(reason) > 20, f"a skip needs its reason: {line}"
        rows.append((check, files, reason))
    assert rows, "the skip list is empty or unparsed"
    return rows


def checkov_failures() -> Iterator[tuple[str, str, str, str]]:
    """(check id, file relative to deploy/, resource, check name) of every failed check of
    `checkov -d deploy`, over every framework it finds there."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: `make test` installs it (.stamps/checkov)"
    done = subprocess.run(
        [
            CHECKOV,
            "-d",
            "deploy",
            "--output",
            "json",
            "--compact",
            "--quiet",
            "--skip-download",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # Offline: no policy metadata or guidelines from the vendor's platform.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    reports = json.loads(done.stdout)
    for report in reports if isinstance(reports, list) else [reports]:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        for failed in report["results"]["failed_checks"]:
            # checkov's file_path is relative to deploy/ for some frameworks, to the working
            # directory for others.
            path = failed["file_path"].lstrip("/").removeprefix("deploy/")
            yield failed["check_id"], path, failed["resource"], failed["check_name"]


def test_checkov_fails_nothing_outside_the_documented_skip_list() -> None:
    skips = documented_skips()
    failures = list(checkov_failures())
    unexplained = [
        failure
        for failure in failures
        if not any(
            failure[0] == check and fnmatch.fnmatch(failure[1], files) for check, files, _ in skips
        )
    ]
    assert not unexplained, "failed checks not in docs/deploy.md's skip list:\n" + "\n".join(
        map(str, unexplained)
    )
    stale = [
        (check, files)
        for check, files, _ in skips
        if not any(f[0] == check and fnmatch.fnmatch(f[1], files) for f in failures)
    ]
    assert not stale, f"skips that no longer fail, remove them from docs/deploy.md: {stale}"


# --- what the scanners do not check -------------------------------------------------------


def test_every_object_names_the_namespace() -> None:
    for doc in objects():
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_every_pod_is_hardened_with_its_own_unprivileged_ids() -> None:
    uids = {}
    for doc in workloads():
        name, pod = doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] >= 10000, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        uids[name] = context["runAsUser"]
        for container in pod["containers"]:
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, name
            assert own["readOnlyRootFilesystem"] is True, name
            assert own["capabilities"] == {"drop": ["ALL"]}, name
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            assert {"cpu", "memory"} <= limits.keys() & requests.keys(), name
            assert "livenessProbe" in container and "readinessProbe" in container, name
            # A read-only root needs somewhere to write: /tmp (HOME and TMPDIR in the image).
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts or "/data" in mounts, name
    docgen = {uids[n] for n in ("docgen-edge", "docgen-generator", "docgen-summary")}
    assert docgen == {10001}, "the image's USER"
    assert uids["docgen-redis"] != 10001


def test_no_secret_is_an_environment_variable() -> None:
    for doc in workloads():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                assert "valueFrom" not in variable, (doc["metadata"]["name"], variable)
                assert not re.search(r"SECRET|API_KEY|PASSWORD|_URL_FILE", variable["name"]) or (
                    variable["name"].endswith("_FILE")
                    and variable["value"].startswith("/var/run/secrets/")
                ), variable


def test_every_docgen_variable_in_the_manifests_is_read_by_a_service() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    used = {
        name for path in MANIFESTS for name in re.findall(r"DOCGEN_[A-Z0-9_]+", path.read_text())
    }
    # NAME_FILE is read wherever NAME is (services/common/env.py).
    unread = {name for name in used if name.removesuffix("_FILE") not in source}
    assert used and not unread, unread


def test_mounted_secret_files_are_the_ones_the_settings_point_at() -> None:
    for name in ("docgen-edge", "docgen-generator", "docgen-summary"):
        pod = workload(name)["spec"]["template"]["spec"]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "secrets"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
        files = {
            f"{mount['mountPath']}/{item['path']}"
            for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        pointed = {v for k, v in env(name).items() if k.endswith(("_FILE", "_CERT", "_KEY", "_CA"))}
        assert pointed == files, name


def test_pod_disruption_budgets_cover_edges_and_generators() -> None:
    budgets = {
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: doc["spec"]
        for doc in objects()
        if doc["kind"] == "PodDisruptionBudget"
    }
    assert set(budgets) == {"docgen-edge", "docgen-generator"}
    for name, spec in budgets.items():
        assert workload(name)["spec"]["replicas"] > spec["maxUnavailable"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict[str, Any], source: str) -> bool:
    """Does a NetworkPolicy peer admit `source` (a pod name in this namespace, or
    `ns:<namespace>` for anything in another namespace)?"""
    if "ipBlock" in peer:
        return False
    if source.startswith("ns:"):
        namespace = peer.get("namespaceSelector")
        return namespace is not None and _selects(
            namespace, {"kubernetes.io/metadata.name": source[3:]}
        )
    if "namespaceSelector" in peer:
        return False
    return _selects(peer["podSelector"], {"app.kubernetes.io/name": source})


def _allowed(
    policies: list[dict[str, Any]], pod: str, direction: str, peer: str, port: int
) -> bool:
    """Does some policy selecting `pod` allow this direction (NetworkPolicies only add)?"""
    selecting = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], {"app.kubernetes.io/name": pod})
        and direction in p["spec"]["policyTypes"]
    ]
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            if any(_peer_matches(p, peer) for p in rule[peers_key]) and any(
                p["port"] == port for p in rule["ports"]
            ):
                return True
    return False


def test_network_policies_allow_exactly_the_documented_paths() -> None:
    policies = [doc for doc in objects() if doc["kind"] == "NetworkPolicy"]
    default = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in default)
    pods = ["docgen-edge", "docgen-generator", "docgen-summary", "docgen-redis", "vllm"]
    ports = {"docgen-edge": 8080, "docgen-generator": 50051, "docgen-summary": 50052}
    ports |= {"docgen-redis": 6379, "vllm": 8000}
    allowed = {
        ("ns:ingress-nginx", "docgen-edge"),
        ("docgen-edge", "docgen-generator"),
        ("docgen-generator", "docgen-summary"),
        ("docgen-generator", "docgen-redis"),
        ("docgen-generator", "vllm"),
    }
    for source in [*pods, "ns:ingress-nginx", "ns:default"]:
        for target in pods:
            port = ports[target]
            admitted = _allowed(policies, target, "Ingress", source, port) and (
                source.startswith("ns:") or _allowed(policies, source, "Egress", target, port)
            )
            assert admitted == ((source, target) in allowed), (source, target)


def test_the_generator_reaches_the_planner() -> None:
    """`generate{plan}` needs the generator → planner (T-05) path, and only the generator's."""
    policies = [doc for doc in objects() if doc["kind"] == "NetworkPolicy"]
    url = env("docgen-generator")["DOCGEN_PLANNER_URL"]
    assert url.startswith("http://planner.planner.svc") and url.endswith(":8080")
    assert _allowed(policies, "docgen-generator", "Egress", "ns:planner", 8080)
    for pod in ["docgen-edge", "docgen-summary", "docgen-redis"]:
        assert not _allowed(policies, pod, "Egress", "ns:planner", 8080), pod


def test_generators_share_redis_and_edges_balance_over_them() -> None:
    generator, edge = env("docgen-generator"), env("docgen-edge")
    assert generator["DOCGEN_RUNLOG_URL_FILE"].startswith("/var/run/secrets/")
    assert edge["DOCGEN_GENERATOR_ADDR"].startswith("dns:///")
    assert generator["DOCGEN_SUMMARY_ADDR"].startswith("dns:///")


def test_grpc_is_mutual_tls_everywhere() -> None:
    for name in ("docgen-edge", "docgen-generator", "docgen-summary"):
        variables = env(name).keys()
        assert {"DOCGEN_GRPC_TLS_CERT", "DOCGEN_GRPC_TLS_KEY", "DOCGEN_GRPC_TLS_CA"} <= variables


def test_termination_grace_covers_the_generators_drain_and_grace() -> None:
    generator = env("docgen-generator")
    period = workload("docgen-generator")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
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


def test_the_kustomization_applies_every_manifest_but_the_examples_and_optional_ones() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    top = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")}
    assert listed == top - {"kustomization.yaml", "secret.example.yaml"}
    images = {
        c["image"].split(":")[0]
        for d in workloads()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert {i["name"] for i in kustomization["images"]} <= images


# --- the image ----------------------------------------------------------------------------


def test_the_dockerfile_runs_unprivileged_with_a_healthcheck_and_its_data() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    runtime = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*\n\s*CMD \[\"docgen-healthcheck\"\]", runtime, re.M)
    # What the package build reads (tests/test_package_install.py builds that wheel).
    for source in ("pyproject.toml setup.py ./", "services ./services", "clients ./clients"):
        assert f"COPY {source}\n" in dockerfile, source
    assert "COPY schemas ./schemas\n" in dockerfile
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"**/node_modules", "**/__pycache__", ".venv"} <= set(ignored)
    probe = "/opt/docgen/bin/docgen-healthcheck"
    assert f"deploy/healthcheck.py {probe}" in dockerfile
    for name in ("docgen-generator", "docgen-summary"):
        for kind in ("readinessProbe", "livenessProbe"):
            assert containers(name)[0][kind]["exec"]["command"][0] == probe


def test_the_image_health_check_probes_the_service_pid_1_runs(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    cmdline = tmp_path / "cmdline"
    for module in ("services.edge", "services.generator", "services.summary"):
        cmdline.write_bytes(f"/opt/docgen/bin/python\0-m\0{module}\0".encode())
        assert healthcheck.running_service(cmdline) == module
    cmdline.write_bytes(b"sleep\0infinity\0")
    with pytest.raises(RuntimeError, match="not a docgen service"):
        healthcheck.running_service(cmdline)
    # Nothing listening: unhealthy, in one line.
    done = subprocess.run(
        [sys.executable, DEPLOY / "healthcheck.py", "--grpc", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("unhealthy: ")
