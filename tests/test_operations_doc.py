"""docs/operations.md cannot drift from the code: every setting, env var and metric is in it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from services.common import metrics

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "operations.md").read_text()


def test_settings_table_matches_the_settings_classes() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/settings_doc.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_env_var_the_code_reads_is_documented() -> None:
    code = "\n".join(
        p.read_text() for d in ("services", "clients", "tools") for p in (ROOT / d).rglob("*.py")
    )
    names = set(re.findall(r"\"(DOCGEN_[A-Z0-9_]+)\"", code))
    assert names, "the pattern found no env var at all"
    missing = sorted(n for n in names if n not in DOC)
    assert not missing, f"not in docs/operations.md: {missing}"


def test_every_metric_is_documented() -> None:
    found = [getattr(m, "metric", m) for m in vars(metrics).values()]  # BoundedLabels wraps one
    names = [m._name for m in found if isinstance(m, MetricWrapperBase)]
    assert len(names) >= 10
    missing = [n for n in names if f"`{n}" not in DOC]
    assert not missing, f"metrics missing from docs/operations.md: {missing}"
