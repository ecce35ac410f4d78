"""The Node.js side of the test suite (AsyncAPI validator, Playwright driver): each lives in
its own folder with a package-lock.json, installed with `npm ci` when missing or stale."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def ensure_npm_packages(folder: Path, npm: str, *, timeout_s: float = 540) -> None:
    """`npm ci` in `folder` unless node_modules matches the lock file; fails the test (never
    skips) when the install fails. --ignore-scripts: none of our packages needs one, and one
    dependency's only script is a telemetry ping; playwright-core never downloads a browser
    itself, but PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD makes sure of it."""
    installed = folder / "node_modules" / ".package-lock.json"
    lock = folder / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=folder,
        env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"`npm ci` in {folder} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
