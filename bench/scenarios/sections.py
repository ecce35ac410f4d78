"""Section time with the bundled model, end to end through the edge, beside the plain `openai`
client reading the same llama.cpp server directly (same prompts, same parameters, interleaved
document by document in the same run); and the summary latency the client sees after each
section of those documents.

Length is forced: `logit_bias` forbids the model's end tokens (through the generator's
`DOCGEN_LLM_EXTRA_BODY` and the direct client's `extra_body` alike), so every section runs to
`max_tokens`; the tokens actually produced are reported."""

from __future__ import annotations

import statistics
import time
from typing import Any

import openai

from bench.scenarios import Context
from bench.stats import describe, ratio
from bench.wsclient import StreamSocket, client_session
from services.edge.frames import outline_from_frame
from services.generator.prompts import build_section_messages
from services.generator.settings import GeneratorSettings

SECTIONS = [
    (
        "site",
        "Finding the site",
        "Footfall, rent, frontage, and why a corner near a school beats a high street.",
    ),
    (
        "ovens",
        "Choosing ovens",
        "Deck ovens versus convection, steam, capacity per hour, and buying second-hand.",
    ),
    (
        "flour",
        "Flour and suppliers",
        "Mills, protein content, organic premiums, and keeping two suppliers.",
    ),
    (
        "menu",
        "A menu that sells out",
        "Few products done well, sourdough versus enriched doughs, seasonal items.",
    ),
    ("staff", "Hiring and shifts", "Night shifts, training a second baker, and what to pay."),
    (
        "money",
        "Margins and prices",
        "Ingredient cost per loaf, labour, waste, and pricing against supermarkets.",
    ),
    (
        "wholesale",
        "Wholesale customers",
        "Cafés and restaurants, delivery rounds, and payment terms.",
    ),
    (
        "growth",
        "When to grow",
        "A second shop, a bigger oven, or classes: the numbers behind each choice.",
    ),
]


def bench_outline(document: int, sections: int, tokens: int) -> dict[str, Any]:
    chosen = [SECTIONS[i % len(SECTIONS)] for i in range(sections)]
    return {
        "document_id": f"bench-doc-{document}",
        "title": "Running a neighbourhood bakery",
        "sections": [
            {"id": f"{sid}-{i}", "title": title, "brief": brief, "target_tokens": tokens}
            for i, (sid, title, brief) in enumerate(chosen)
        ],
    }


def _edge_timings(
    frames: list[tuple[float, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[str], float]:
    """Per section: client-side section time, tokens, server duration, summary latency; plus
    the summary text each section's prompt was built with; plus the whole document's time."""
    sent_at = frames[0][0]
    sections: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    prompt_summaries: list[str] = []
    summary = ""
    for at, frame in frames[1:]:
        kind = frame["type"]
        if kind == "section_start":
            sid = frame["section_id"]
            if sid not in sections:
                order.append(sid)
                prompt_summaries.append(summary)
            sections[sid] = {"start": at, "first_chunk": None, "attempt": frame["attempt"]}
        elif kind == "section_chunk":
            entry = sections[frame["section_id"]]
            if entry["first_chunk"] is None:
                entry["first_chunk"] = at
        elif kind == "section_end":
            entry = sections[frame["section_id"]]
            entry.update(
                end=at,
                tokens=frame["usage"]["output_tokens"],
                finish_reason=frame["finish_reason"],
                server_duration_ms=frame["duration_ms"],
                ttft_ms=frame["ttft_ms"],
            )
        elif kind == "summary_update":
            entry = sections[frame["through_section"]]
            if "summary_at" not in entry:
                entry["summary_at"] = at
                entry["summary_server_ms"] = frame["latency_ms"]
                entry["summary_method"] = frame["method"]
            summary = frame["summary"]
        elif kind == "error":
            raise RuntimeError(f"the run reported an error: {frame['code']}: {frame['message']}")
        elif kind == "run_end" and frame["status"] != "completed":
            raise RuntimeError(f"the run ended {frame['status']}")
    results = []
    for sid in order:
        entry = sections[sid]
        results.append(
            {
                "section_s": entry["end"] - entry["start"],
                "ttft_s": (entry["first_chunk"] or entry["end"]) - entry["start"],
                "tokens": entry["tokens"],
                "finish_reason": entry["finish_reason"],
                "server_duration_ms": entry["server_duration_ms"],
                "summary_client_s": entry["summary_at"] - entry["end"]
                if "summary_at" in entry
                else None,
                "summary_server_ms": entry.get("summary_server_ms"),
                "attempt": entry["attempt"],
            }
        )
    return results, prompt_summaries, frames[-1][0] - sent_at


async def _direct_section(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, str]],
    tokens: int,
    extra_body: dict[str, Any],
) -> dict[str, Any]:
    """One section read the plain way: the `openai` client's typed stream."""
    started = time.perf_counter()
    first: float | None = None
    deltas = 0
    usage_tokens = None
    finish_reason = None
    stream = await client.chat.completions.create(  # type: ignore[call-overload]
        model=model,
        messages=messages,
        max_tokens=tokens,
        temperature=GeneratorSettings.llm_temperature,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra_body,
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                deltas += 1
                if first is None:
                    first = time.perf_counter()
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    ended = time.perf_counter()
    return {
        "section_s": ended - started,
        "ttft_s": (first or ended) - started,
        "tokens": usage_tokens if usage_tokens is not None else deltas,
        "finish_reason": finish_reason,
    }


async def run(ctx: Context) -> dict[str, Any]:
    config = ctx.config
    assert ctx.llama is not None and ctx.llama_stack is not None
    extra_body = ctx.llama_extra_body
    client = openai.AsyncOpenAI(
        base_url=ctx.llama.base_url, api_key="bench", max_retries=0, timeout=300
    )
    session = client_session()
    edge: list[dict[str, Any]] = []
    direct: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    try:
        # Warm the model (first request pages the weights in), not measured.
        await _direct_section(
            client, ctx.llama.model, [{"role": "user", "content": "Say hello."}], 8, extra_body
        )
        for number, sections in enumerate(config.section_documents):
            outline = bench_outline(number, sections, config.section_tokens)
            ctx.say(
                f"sections: document {number + 1}/{len(config.section_documents)} "
                f"({sections} x {config.section_tokens} tokens) through the edge"
            )
            sock = StreamSocket(session, ctx.llama_stack.ws_url, f"bench-doc-{number}")
            await sock.connect()
            try:
                frames = await sock.frames_of_run(outline)
            finally:
                await sock.close()
            timings, prompt_summaries, document_s = _edge_timings(frames)
            edge.extend(timings)
            ctx.say(f"sections: document {number + 1} the same prompts, direct")
            outline_pb = outline_from_frame(outline)
            direct_document_s = 0.0
            for index in range(sections):
                messages = build_section_messages(outline_pb, index, prompt_summaries[index])
                result = await _direct_section(
                    client, ctx.llama.model, messages, config.section_tokens, extra_body
                )
                direct.append(result)
                direct_document_s += result["section_s"]
            documents.append(
                {
                    "sections": sections,
                    "edge_s": round(document_s, 3),
                    "direct_sections_sum_s": round(direct_document_s, 3),
                }
            )
    finally:
        await session.close()
        await client.close()

    paired = [
        e["section_s"] / d["section_s"] for e, d in zip(edge, direct, strict=True) if d["section_s"]
    ]
    edge_s = describe([e["section_s"] for e in edge])
    direct_s = describe([d["section_s"] for d in direct])
    summaries = [e["summary_client_s"] for e in edge if e["summary_client_s"] is not None]
    return {
        "model": ctx.llama.model,
        "target_tokens": config.section_tokens,
        "logit_bias": extra_body.get("logit_bias"),
        "edge_section_s": edge_s,
        "direct_section_s": direct_s,
        "ratio_p50": ratio(edge_s["p50"], direct_s["p50"]),
        "ratio_p95": ratio(edge_s["p95"], direct_s["p95"]),
        "ratio_paired_median": round(statistics.median(paired), 4) if paired else None,
        "edge_ttft_s": describe([e["ttft_s"] for e in edge]),
        "direct_ttft_s": describe([d["ttft_s"] for d in direct]),
        "edge_tokens": describe([float(e["tokens"]) for e in edge], digits=1),
        "direct_tokens": describe([float(d["tokens"]) for d in direct], digits=1),
        "edge_tokens_per_s": describe([e["tokens"] / e["section_s"] for e in edge], digits=1),
        "direct_tokens_per_s": describe([d["tokens"] / d["section_s"] for d in direct], digits=1),
        "finish_reasons": {
            "edge": _count(e["finish_reason"] for e in edge),
            "direct": _count(d["finish_reason"] for d in direct),
        },
        "retried_sections": sum(1 for e in edge if e["attempt"] > 1),
        "summary_latency_ms": describe(summaries, scale=1000),
        "summary_server_reported_ms": describe(
            [float(e["summary_server_ms"]) for e in edge if e["summary_server_ms"] is not None]
        ),
        "documents": documents,
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
