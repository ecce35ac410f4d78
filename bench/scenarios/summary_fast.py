"""The summary's fast path on its own, in process: each extractive update of an 8-section
document of ~600-token sections, section after section (no gRPC, no network). The part of the
summary latency that is the summarizer's own work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.scenarios import Context
from bench.stats import describe
from services.summary.measure import bench_document, fast_path_latencies
from services.summary.settings import SummarySettings

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "documents"


async def run(ctx: Context) -> dict[str, Any]:
    documents = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    budget = SummarySettings.budget_words
    document = bench_document(documents, sections=8, section_tokens=600)
    latencies = fast_path_latencies(document, budget, rounds=ctx.config.summary_fast_rounds)
    ctx.say(f"summary_fast: {len(latencies)} updates timed")
    return {
        "budget_words": budget,
        "sections": len(document["sections"]),
        "section_words": [len(s["text"].split()) for s in document["sections"]],
        "update_ms": describe(latencies, scale=1000),
    }
