"""Tests of the benchmark hook of the summary's fast path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.summary.measure import WORDS_PER_TOKEN, bench_document, fast_path_latencies

DOCUMENTS = [
    json.loads(p.read_text(encoding="utf-8"))
    for p in sorted((Path(__file__).parent / "fixtures" / "documents").glob("*.json"))
]


def test_bench_document_has_eight_sections_of_about_600_tokens() -> None:
    document = bench_document(DOCUMENTS, sections=8, section_tokens=600)
    target = 600 * WORDS_PER_TOKEN
    assert len(document["sections"]) == 8
    assert len({s["id"] for s in document["sections"]}) == 8
    for section in document["sections"]:
        assert 0.85 * target <= len(section["text"].split()) <= target
        assert section["text"].rstrip()[-1] in ".?!"
        assert section["title"]
    assert document == bench_document(DOCUMENTS, sections=8, section_tokens=600)


def test_latencies_one_per_section_and_round() -> None:
    document = bench_document(DOCUMENTS, sections=8, section_tokens=600)
    latencies = fast_path_latencies(document, 250, rounds=2)
    assert len(latencies) == 16
    assert all(0 < t < 60 for t in latencies)  # seconds; the targets live in `make bench`


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d["title"][:20] for d in DOCUMENTS])
def test_latencies_over_each_fixture_document(document: dict) -> None:
    latencies = fast_path_latencies(document, 250, warmup=False)
    assert len(latencies) == len(document["sections"])


def test_rounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rounds"):
        fast_path_latencies(DOCUMENTS[0], 250, rounds=0)
