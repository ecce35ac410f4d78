"""Benchmark hook for the summary's fast path: the time of each extractive update as a document
is written section by section, and a document of the size the task card's target is about.

A document here is the fixture format (tests/fixtures/documents/*.json):
`{"title": str, "sections": [{"id": str, "title": str, "text": str}, ...]}`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from services.summary.extractive import ExtractiveSummarizer, Summary

# English prose averages about 0.75 words per token.
WORDS_PER_TOKEN = 0.75
_WORD = re.compile(r"\S+")


def fast_path_latencies(
    document: Mapping[str, Any],
    budget_words: int,
    *,
    rounds: int = 1,
    warmup: bool = True,
    language: str = "en",
) -> list[float]:
    """Seconds taken by each extractive update (the work the summary service does per section,
    without the gRPC hop), section after section, `rounds` times over: `rounds * sections`
    values, in order. With `warmup`, one unmeasured pass first, as a long-running service has
    made."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    summarizer = ExtractiveSummarizer(budget_words=budget_words, language=language)
    latencies: list[float] = []
    for round_number in range(rounds + (1 if warmup else 0)):
        summary = Summary()
        for section in document["sections"]:
            started = time.perf_counter()
            summary = summarizer.update(
                summary,
                section_id=section["id"],
                title=section["title"],
                text=section["text"],
                document_title=document["title"],
            )
            elapsed = time.perf_counter() - started
            if not (warmup and round_number == 0):
                latencies.append(elapsed)
    return latencies


def bench_document(
    documents: Sequence[Mapping[str, Any]], *, sections: int = 8, section_tokens: int = 600
) -> dict[str, Any]:
    """A document of `sections` sections of about `section_tokens` tokens each, made of the
    given documents' texts: the titles of the document with the most sections, each section's
    own text first, then the other documents' section texts in turn until the length is
    reached, cut at a sentence end. The topics mix, but the sentences, vocabulary and lengths
    are real prose, which is what the fast path's cost depends on."""
    if not documents:
        raise ValueError("no documents")
    base = max(documents, key=lambda d: len(d["sections"]))
    # The other documents' texts only: a section never repeats its own sentences.
    pool = [s["text"] for d in documents if d is not base for s in d["sections"]]
    if not pool:
        raise ValueError("needs a second document with sections to draw text from")
    target_words = round(section_tokens * WORDS_PER_TOKEN)
    built = []
    next_text = 0
    for index in range(sections):
        template = base["sections"][index % len(base["sections"])]
        parts = [template["text"]]
        while len("\n\n".join(parts).split()) < target_words:
            parts.append(pool[next_text % len(pool)])
            next_text += 1
        built.append(
            {
                "id": f"s{index + 1}",
                "title": template["title"],
                "text": _cut_at_sentence("\n\n".join(parts), target_words),
            }
        )
    return {"title": base["title"], "sections": built}


def _cut_at_sentence(text: str, max_words: int) -> str:
    """The text up to the last sentence end within `max_words` words (all of it if none)."""
    spans = [m.end() for m in _WORD.finditer(text)]
    if len(spans) <= max_words:
        return text
    kept = text[: spans[max_words - 1]]
    end = max(kept.rfind(mark) for mark in (". ", ".\n", "? ", "! "))
    return kept[: end + 1] if end > 0 else kept
