"""The global summary through the whole stack: versioning, which summary each section's prompt
gets, and the optional LLM refinement (in time, too slow, failing, overtaken by the next
section). Sections and refinements come from two scripted OpenAI-compatible servers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import Stack, start_stack, wait_for

OUTLINE_5: dict[str, Any] = {
    "document_id": "doc-garden",
    "title": "Keeping a kitchen garden",
    "sections": [
        {"id": "soil", "title": "Soil first", "brief": "Compost", "target_tokens": 80},
        {"id": "beds", "title": "Raised beds", "brief": "Sizes", "target_tokens": 80},
        {"id": "water", "title": "Watering", "brief": "When and how much", "target_tokens": 80},
        {"id": "pests", "title": "Pests", "brief": "Slugs and aphids", "target_tokens": 80},
        {"id": "harvest", "title": "Harvest", "brief": "Picking, storing", "target_tokens": 80},
    ],
}
SECTION_IDS = [s["id"] for s in OUTLINE_5["sections"]]
SECTION_TEXTS = {
    "soil": "Good soil is the foundation of every kitchen garden. Compost feeds the worms that "
    "keep it open. A spade of manure each autumn keeps the beds fertile.",
    "beds": "Raised beds warm up early in spring and drain well. Untreated larch boards last "
    "about ten years. A bed narrow enough to reach the middle is never trodden on.",
    "water": "Watering deeply twice a week beats a daily sprinkle. Morning watering lets the "
    "leaves dry before night. A water butt catches rain from the shed roof.",
    "pests": "Slugs come out on damp evenings and eat young lettuce. Beer traps and copper "
    "tape keep them away. Ladybirds eat aphids if the gardener does not spray.",
    "harvest": "Beans taste best picked small and often. Onions store through winter once "
    "their necks are dry. A cool dark shed keeps potatoes firm until spring.",
}
# The refinement prompt keeps its <summary> block (docs/prompts.md, "The summary refinement
# prompt").
SUMMARY_BLOCK = re.compile(r"<summary>\n(.*?)\n</summary>", re.DOTALL)
# The section prompt carries the running summary as context at the end of its system message,
# after this line (docs/prompts.md, "The section prompt"); the first section gets none.
SECTION_PROMPT_CONTEXT = "\n\nWhat the earlier parts of the report say:\n"


def section_script(token_delay_s: float = 0.0) -> Callable[[int, dict[str, Any]], Reply]:
    """Answers each section prompt with that section's text, `token_delay_s` per word."""

    def script(_n: int, body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        for section in OUTLINE_5["sections"]:
            if f'"{section["title"]}"' in prompt:
                text = SECTION_TEXTS[section["id"]]
                return Reply(tokens=words(text), token_delay_s=token_delay_s)
        raise AssertionError(f"prompt names no known section: {prompt[:200]}")

    return script


def covered_sections(refine_prompt: str) -> int:
    """How many sections the summary given to the refiner covers (one line per section)."""
    match = SUMMARY_BLOCK.search(refine_prompt)
    assert match, refine_prompt
    return len(match.group(1).splitlines())


NUMBER_WORDS = ("one", "two", "three", "four", "five")


def refined_text(sections: int) -> str:
    """A refinement that passes the sanity checks (no digits: numbers must come from the
    summary) and says which step it belongs to."""
    body = " ".join(
        f"Part {NUMBER_WORDS[i]} of the garden guide gives practical advice that builds on the "
        "parts before it."
        for i in range(sections)
    )
    return f"Refined digest of the first {NUMBER_WORDS[sections - 1]} sections. {body}"


def refine_script(
    reply: Callable[[int], Reply] | None = None,
) -> Callable[[int, dict[str, Any]], Reply]:
    """Answers each refinement request; `reply(covered_sections)` overrides the good answer."""

    def script(_n: int, body: dict[str, Any]) -> Reply:
        covered = covered_sections(body["messages"][-1]["content"])
        if reply is not None:
            return reply(covered)
        return Reply(tokens=words(refined_text(covered)))

    return script


@asynccontextmanager
async def llm_mode_stack(
    refine: Callable[[int, dict[str, Any]], Reply],
    *,
    section_token_delay_s: float = 0.0,
    deadline_s: float = 5.0,
    prompt_wait_s: float = 0.0,
) -> AsyncIterator[tuple[Stack, ScriptedLLM]]:
    refiner_llm = ScriptedLLM(refine)
    await refiner_llm.start()
    try:
        stack = await start_stack(
            ScriptedLLM(section_script(section_token_delay_s)),
            summary={
                "mode": "llm",
                "llm_base_url": refiner_llm.base_url,
                "llm_model": "refiner",
                "llm_deadline_s": deadline_s,
            },
            generator={"summary_prompt_wait_s": prompt_wait_s},
        )
        try:
            yield stack, refiner_llm
        finally:
            await stack.close()
    finally:
        await refiner_llm.stop()


async def run_outline(stack: Stack) -> list[dict[str, Any]]:
    client = await stack.connect()
    await client.send({"type": "generate", "outline": OUTLINE_5})
    frames = await client.run_to_end(timeout=60)
    assert frames[-1]["type"] == "run_end" and frames[-1]["status"] == "completed", frames[-1]
    return frames


def of_type(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


def latest_summary_before(frames: list[dict[str, Any]], seq: int) -> str:
    """The summary a client holds just before event `seq`: the last update sent before it."""
    updates = [f for f in of_type(frames, "summary_update") if f["seq"] < seq]
    return updates[-1]["summary"] if updates else ""


def prompt_summaries(llm: ScriptedLLM) -> list[str]:
    """The running summary in each section prompt's system message, in request order ("" when
    the prompt has none)."""
    summaries = []
    for request in llm.requests:
        system, user = request.body["messages"]
        assert system["role"] == "system" and user["role"] == "user"
        # The summary is context in the system message, never part of the request itself.
        assert SECTION_PROMPT_CONTEXT.strip() not in user["content"]
        _, found, summary = system["content"].partition(SECTION_PROMPT_CONTEXT)
        assert not found or summary, system["content"]
        summaries.append(summary)
    return summaries


def assert_versioning(frames: list[dict[str, Any]]) -> None:
    """One version more per update; through_section never goes back to an older section."""
    updates = of_type(frames, "summary_update")
    assert [u["version"] for u in updates] == list(range(1, len(updates) + 1))
    through = [SECTION_IDS.index(u["through_section"]) for u in updates]
    assert through == sorted(through), through
    ends = {f["section_id"]: f for f in of_type(frames, "section_end")}
    for update in updates:
        end = ends[update["through_section"]]
        assert update["seq"] > end["seq"]
        # Measured from that section's end (ms, both clocks of the generator).
        assert update["latency_ms"] <= update["ts"] - end["ts"] + 5


def assert_each_prompt_has_the_latest_summary(
    frames: list[dict[str, Any]], llm: ScriptedLLM
) -> None:
    starts = of_type(frames, "section_start")
    assert len(starts) == len(llm.requests) == len(SECTION_IDS)
    for start, block in zip(starts, prompt_summaries(llm), strict=True):
        expected = latest_summary_before(frames, start["seq"])
        assert block == expected, start["section_id"]  # "" == "" before the first update


# --- extractive mode (the default) -------------------------------------------------------


async def test_prompt_of_section_k_carries_the_summary_through_section_k_minus_1() -> None:
    stack = await start_stack(ScriptedLLM(section_script()))
    try:
        frames = await run_outline(stack)
    finally:
        await stack.close()
    updates = of_type(frames, "summary_update")
    assert [u["through_section"] for u in updates] == SECTION_IDS
    assert all(u["method"] == "extractive" for u in updates)
    assert_versioning(frames)
    blocks = prompt_summaries(stack.llm)
    assert blocks[0] == ""  # the first section's prompt has no summary
    for k in range(2, 6):  # sections 2..5, 1-based
        block = blocks[k - 1]
        assert block == updates[k - 2]["summary"]  # the update through section k-1
        # One line per section so far: sections 1..k-1 and nothing later.
        assert [line.split(":")[0] for line in block.splitlines()] == [
            s["title"] for s in OUTLINE_5["sections"][: k - 1]
        ]
        # Extractive: each line quotes its section.
        for line, section_id in zip(block.splitlines(), SECTION_IDS, strict=False):
            first_sentence = line.split(": ", 1)[1].split(". ")[0]
            assert first_sentence in SECTION_TEXTS[section_id]
    assert_each_prompt_has_the_latest_summary(frames, stack.llm)


# --- LLM mode ------------------------------------------------------------------------------


async def test_refinement_in_time_follows_each_fast_update() -> None:
    # Sections take ~1.8 s and a refinement a few ms: each arrives while the next section is
    # being written, so that section's prompt already had the fast summary. (The margin is for
    # a busy machine, where a stall of a second happens.)
    async with llm_mode_stack(refine_script(), section_token_delay_s=0.06) as (stack, refiner):
        frames = await run_outline(stack)
    updates = of_type(frames, "summary_update")
    assert [(u["through_section"], u["method"]) for u in updates] == [
        (section_id, method) for section_id in SECTION_IDS for method in ("extractive", "llm")
    ]
    assert_versioning(frames)
    for k, (fast, refined) in enumerate(zip(updates[::2], updates[1::2], strict=True), start=1):
        assert refined["version"] == fast["version"] + 1
        assert refined["summary"] == refined_text(k)
        assert fast["summary"] != refined["summary"]
        assert refined["latency_ms"] >= fast["latency_ms"]
    # The refiner was asked to rewrite exactly the fast summary of each step.
    assert [covered_sections(r.prompt_text) for r in refiner.requests] == [1, 2, 3, 4, 5]
    for request, fast in zip(refiner.requests, updates[::2], strict=True):
        assert f"<summary>\n{fast['summary']}\n</summary>" in request.prompt_text
    # The run's trace id reaches the refinement's LLM request too.
    trace_ids = {r.headers.get("X-Request-ID") for r in [*stack.llm.requests, *refiner.requests]}
    assert len(trace_ids) == 1 and None not in trace_ids
    assert not of_type(frames, "error")
    # Without a prompt wait, every prompt has the fast summary of the section before it.
    assert_each_prompt_has_the_latest_summary(frames, stack.llm)
    assert prompt_summaries(stack.llm)[1:] == [u["summary"] for u in updates[:-2:2]]


async def test_refinement_that_arrives_before_the_next_section_starts_is_in_its_prompt() -> None:
    # With DOCGEN_SUMMARY_PROMPT_WAIT_S the next section waits (a bounded time) for the
    # refinement, so the refinement is the latest summary when that section starts.
    async with llm_mode_stack(
        refine_script(
            lambda covered: Reply(tokens=words(refined_text(covered)), token_delay_s=0.005)
        ),
        prompt_wait_s=5.0,
    ) as (stack, _refiner):
        frames = await run_outline(stack)
    updates = of_type(frames, "summary_update")
    assert [u["method"] for u in updates] == ["extractive", "llm"] * 5
    assert_versioning(frames)
    assert_each_prompt_has_the_latest_summary(frames, stack.llm)
    assert prompt_summaries(stack.llm)[1:] == [refined_text(k) for k in range(1, 5)]
    # Each section starts right after the refinement of the one before it.
    kinds = [f["type"] for f in frames if f["type"] != "section_chunk"]
    assert kinds[1:-1] == ["section_start", "section_end", "summary_update", "summary_update"] * 5


@pytest.mark.parametrize(
    "failure",
    ["too_slow", "http_500", "refusal", "over_budget"],
)
@pytest.mark.parametrize("prompt_wait_s", [0.0, 5.0], ids=["no-wait", "prompt-wait"])
async def test_refinement_too_slow_or_failing_leaves_the_fast_summary_and_delays_nothing(
    failure: str, prompt_wait_s: float
) -> None:
    deadline_s = 0.4
    replies: dict[str, Callable[[int], Reply]] = {
        "too_slow": lambda covered: Reply(tokens=words(refined_text(covered)), token_delay_s=3.0),
        "http_500": lambda _covered: Reply(status=500),
        "refusal": lambda _covered: Reply(
            tokens=words("I'm sorry, but I cannot rewrite this summary for you, it is too hard.")
        ),
        "over_budget": lambda _covered: Reply(tokens=words("garden " * 400)),
    }
    async with llm_mode_stack(
        refine_script(replies[failure]), deadline_s=deadline_s, prompt_wait_s=prompt_wait_s
    ) as (stack, refiner):
        frames = await run_outline(stack)
        if failure == "too_slow":
            # The deadline closed every refinement request: the LLM saw each client go away.
            await wait_for(lambda: all(r.disconnected_at is not None for r in refiner.requests))
    updates = of_type(frames, "summary_update")
    assert [(u["through_section"], u["method"]) for u in updates] == [
        (section_id, "extractive") for section_id in SECTION_IDS
    ]
    assert_versioning(frames)
    # Without a wait, a refinement still queued when the next section ends is cancelled before
    # its request goes out; the last one is always sent (the run waits for it).
    assert len(refiner.requests) == 5 if prompt_wait_s else 1 <= len(refiner.requests) <= 5
    assert covered_sections(refiner.requests[-1].prompt_text) == 5
    assert not of_type(frames, "error")
    assert_each_prompt_has_the_latest_summary(frames, stack.llm)
    # The next section starts right after the fast summary (a few ms; 1 s of slack for a
    # loaded machine); with a prompt wait, at most the refinement deadline later (the summary
    # service ends the stream when it gives up), far from the 5 s wait or the 3 s reply.
    limit_ms = 1000 + (deadline_s * 1000 if prompt_wait_s else 0)
    ends = of_type(frames, "section_end")
    starts = of_type(frames, "section_start")
    gaps = [start["ts"] - end["ts"] for end, start in zip(ends, starts[1:], strict=False)]
    assert len(gaps) == 4 and all(gap <= limit_ms for gap in gaps), gaps


async def test_refinement_overtaken_by_the_next_section_is_dropped() -> None:
    # A refinement takes 3 s, a section ~0.3 s: when section k+1 ends, the refinement for
    # k is still running. It is cancelled (its HTTP request closed) and never shown, so
    # `through_section` never goes back. Only the last section's refinement arrives: the run
    # waits for it before `run_end`.
    async with llm_mode_stack(
        refine_script(lambda covered: Reply(tokens=[refined_text(covered)], token_delay_s=3.0)),
        section_token_delay_s=0.01,
    ) as (stack, refiner):
        frames = await run_outline(stack)
        await wait_for(lambda: all(r.disconnected_at is not None for r in refiner.requests[:-1]))
    updates = of_type(frames, "summary_update")
    assert [(u["through_section"], u["method"]) for u in updates] == [
        *((section_id, "extractive") for section_id in SECTION_IDS),
        ("harvest", "llm"),
    ]
    assert updates[-1]["summary"] == refined_text(5)
    assert_versioning(frames)
    assert [r.completed for r in refiner.requests] == [False, False, False, False, True]
    assert not of_type(frames, "error")
    assert_each_prompt_has_the_latest_summary(frames, stack.llm)
