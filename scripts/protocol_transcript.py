"""Regenerates the annotated transcripts in docs/protocol.md from real runs of the in-process
stack: `.venv/bin/python scripts/protocol_transcript.py` (`--check` only reports drift).

tests/test_protocol_doc.py fails when the doc and a fresh run disagree; run this after
changing what the server sends."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.support` is not an installed package

from tests.support.transcript import DOC, read_blocks, replace_blocks, run_sync  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is out of date")
    args = parser.parse_args()
    fresh = run_sync()
    doc = DOC.read_text(encoding="utf-8")
    stale = sorted(name for name, block in fresh.items() if read_blocks(doc).get(name) != block)
    if args.check:
        print("out of date: " + ", ".join(stale) if stale else "up to date")
        return 1 if stale else 0
    DOC.write_text(replace_blocks(doc, fresh), encoding="utf-8")
    print(f"{DOC.relative_to(ROOT)}: rewrote {', '.join(stale) or 'nothing (already current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
