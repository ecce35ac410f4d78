"""Values several processes must agree on are written once, in services/common/defaults.py:
no other Python module of the services, the clients or the tools spells them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import defaults

ROOT = Path(__file__).resolve().parent.parent
NOT_SCANNED = {ROOT / "services" / "common" / "defaults.py"}

LITERALS = [
    f'"{defaults.SUBPROTOCOL}"',
    f'"{defaults.GENERATOR_ADDR}"',
    f'"{defaults.SUMMARY_ADDR}"',
    f'"{defaults.BUNDLED_LLM_MODEL}"',
    f'"{defaults.LLM_API_KEY_PLACEHOLDER}"',
    f'"{defaults.ws_url()}"',
    f":{defaults.BUNDLED_LLM_PORT}/v1",
]


def modules() -> list[Path]:
    return [
        path
        for folder in ("services", "clients", "tools")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in NOT_SCANNED
    ]


@pytest.mark.parametrize("literal", LITERALS)
def test_a_shared_default_is_written_once(literal: str) -> None:
    spelled_out = [
        str(path.relative_to(ROOT)) for path in modules() if literal in path.read_text("utf-8")
    ]
    assert spelled_out == [], f"{literal} belongs in services/common/defaults.py"
