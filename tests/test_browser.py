"""The demo page (services/edge/static/) in real headless Chromium: a whole run, and a run
that survives an edge restart. Debian's /usr/bin/chromium is driven by playwright-core from
tests/browser/drive_page.mjs, which runs a plan of steps and stops at a signal so this side
can restart the edge mid-run; everything else here is the in-process stack."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clients.markdown import render_markdown
from services.edge.schemas import FrameValidator
from tests.support.node import ensure_npm_packages
from tests.support.planner import ScriptedPlanner
from tests.support.processes import free_port
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import Stack, sections_text, start_stack

ROOT = Path(__file__).resolve().parents[1]
BROWSER_DIR = ROOT / "tests" / "browser"
DRIVER = BROWSER_DIR / "drive_page.mjs"
ARTIFACTS = ROOT / "test-artifacts"
EXAMPLE_OUTLINES = sorted((ROOT / "examples" / "outlines").glob("*.json"))
CHROMIUM = os.environ.get("DOCGEN_CHROMIUM", "/usr/bin/chromium")

# Slow enough that a run lasts a few seconds and the edge can be restarted in the middle.
TOKEN_DELAY_S = 0.03
TITLE_IN_PROMPT = re.compile(r'for the part "(.+?)" of a report titled')
SECTION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# Page expressions the plans share.
CONNECTED = "window.docgen && window.docgen.connected"
COMPLETED = "document.querySelector('#run-status').textContent === 'completed'"
CANCELLED = "document.querySelector('#run-status').textContent === 'cancelled'"
OUTLINE_IN_EDITOR = "JSON.parse(document.querySelector('#outline-editor').value)"
MID_RUN_STATE = "({lastSeq: window.docgen.lastSeq, runStatus: window.docgen.runStatus})"
BUTTONS_DISABLED = """({generate: document.querySelector('#generate').disabled,
  cancel: document.querySelector('#cancel').disabled})"""
SECOND_SECTION_HAS_TEXT = (
    "(document.querySelectorAll('[data-section-id]')[1]"
    "?.querySelector('.section-text').textContent.length ?? 0) >= 40"
)
PAGE_SNAPSHOT = """(() => ({
  docgen: {
    lastSeq: window.docgen.lastSeq, runId: window.docgen.runId, runStatus: window.docgen.runStatus,
    reconnects: window.docgen.reconnects, sections: window.docgen.sections,
  },
  blocks: [...document.querySelectorAll('[data-section-id]')].map((el) => ({
    id: el.dataset.sectionId, state: el.dataset.state, sha256: el.dataset.sha256 ?? null,
    verified: el.dataset.verified ?? null, finishReason: el.dataset.finishReason ?? null,
    title: el.querySelector('h4').textContent,
    text: el.querySelector('.section-text').textContent,
  })),
  badges: [...document.querySelectorAll('[data-section-id] .badge')].map((b) => b.textContent),
  tokensWritten: document.querySelector('#tokens-count').dataset.written ?? null,
  tokensCount: document.querySelector('#tokens-count').textContent,
  summary: document.querySelector('#summary').textContent,
  summaryVersion: document.querySelector('#summary').dataset.version ?? null,
  summaryMeta: document.querySelector('#summary-meta').textContent,
  runStatus: document.querySelector('#run-status').textContent,
  sectionsCount: document.querySelector('#sections-count').textContent,
  notices: [...document.querySelectorAll('#errors .notice')].map((n) => n.textContent),
}))()"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def streamed_text(title: str) -> str:
    """What the scripted LLM writes for a section: distinct per title, several sentences (the
    extractive summary picks sentences), and non-ASCII so the browser's UTF-8 is checked."""
    topics = ["planning", "materials", "timing", "costs", "safety", "upkeep", "results", "habits"]
    first = sum(map(ord, title)) % len(topics)
    sentences = [f"This part covers “{title}” in practical terms."]
    for step in range(2):
        topic = topics[(first + step) % len(topics)]
        sentences.append(
            f"Step {step + 1} is about {topic}: keep notes, compare options and adjust — "
            f"small changes in {topic} add up over a season."
        )
    sentences.append("Voilà: a routine that works, naïve or not. ✓")
    return " ".join(sentences)


class SectionScript:
    """Streams `streamed_text(title)` for every section prompt, slowly; the request numbers
    in `drop_first_try` are cut after a few tokens, so the generator retries that section."""

    def __init__(
        self,
        drop_first_try: frozenset[int] = frozenset(),
        cut_at_length: frozenset[int] = frozenset(),
        token_delay_s: float = TOKEN_DELAY_S,
    ) -> None:
        self.drop_first_try = drop_first_try
        self.token_delay_s = token_delay_s
        self.cut_at_length = cut_at_length
        """Request numbers answered as a stream the LLM cut at max_tokens (`length`)."""

    def __call__(self, number: int, body: dict[str, Any]) -> Reply:
        match = TITLE_IN_PROMPT.search(body["messages"][-1]["content"])
        assert match is not None, "the section prompt no longer names its section"
        tokens = words(streamed_text(match.group(1)))
        drop_after = 6 if number in self.drop_first_try else None
        finish = "length" if number in self.cut_at_length else "stop"
        return Reply(
            tokens=tokens,
            token_delay_s=self.token_delay_s,
            drop_after=drop_after,
            finish_reason=finish,
        )


# --- the Node side ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def page_driver() -> list[str]:
    """The command that runs tests/browser/drive_page.mjs; installs playwright-core with
    `npm ci` when node_modules is missing or older than the lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the browser test needs Node.js >= 20 and npm "
            "(`apt-get install nodejs npm`; .ci/run installs them)",
            pytrace=False,
        )
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the browser test drives Debian's Chromium "
            "(`apt-get install chromium`; .ci/run installs it), or set DOCGEN_CHROMIUM",
            pytrace=False,
        )
    ensure_npm_packages(BROWSER_DIR, str(npm), timeout_s=300)
    return [str(node), str(DRIVER)]


async def drive(
    command: list[str],
    url: str,
    plan: dict[str, Any],
    on_signal: dict[str, Callable[[], Awaitable[None]]] | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Runs one plan in the browser; awaits `on_signal[name]()` at each signal step, then lets
    the driver go on. Returns the driver's results, or fails the test with what it saw."""
    on_signal = on_signal or {}
    process = await asyncio.create_subprocess_exec(
        *command,
        url,
        json.dumps(plan),
        cwd=BROWSER_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=32 * 1024 * 1024,  # the final result line carries the page's texts and logs
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr = asyncio.create_task(process.stderr.read())
    final: dict[str, Any] | None = None
    other_output: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            while line := await process.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    other_output.append(line.decode(errors="replace"))
                    continue
                if "signal" in message:
                    await on_signal[message["signal"]]()
                    process.stdin.write(b"go\n")
                    await process.stdin.drain()
                else:
                    final = message
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        process.stdin.close()
        errors = (await stderr).decode(errors="replace")
    if final is None:
        pytest.fail(
            f"the page driver printed no result (exit {process.returncode}):\n"
            f"{errors}{''.join(other_output)}",
            pytrace=False,
        )
    if not final["ok"]:
        log = final.get("log", {})
        pytest.fail(
            "the page driver failed at step {}: {}\npage state: {}\nconsole: {}\nstderr: {}".format(
                final.get("failed_step"),
                final.get("error"),
                json.dumps(final.get("page_state"), ensure_ascii=False, indent=1),
                json.dumps(log.get("console"), ensure_ascii=False),
                errors,
            ),
            pytrace=False,
        )
    return final


# --- the Python side -------------------------------------------------------------------------


async def browser_stack(script: SectionScript) -> Stack:
    stack = await start_stack(ScriptedLLM(script))
    # start_stack's edge was configured with port 0, so its default Origin allowlist
    # (its own origin) names port 0 and a browser's Origin is refused; the restarted edge's
    # settings carry the real port.
    await stack.restart_edge()
    return stack


@pytest.fixture
async def stack_with_a_retry() -> AsyncIterator[Stack]:
    # Request 1 is the second section's first try: it breaks, so that section restarts
    # (section_start attempt 2) and the page must throw away the text it had.
    stack = await browser_stack(SectionScript(drop_first_try=frozenset({1})))
    yield stack
    await stack.close()


@pytest.fixture
async def slow_stack() -> AsyncIterator[Stack]:
    stack = await browser_stack(SectionScript())
    yield stack
    await stack.close()


@pytest.fixture
async def slower_stack() -> AsyncIterator[Stack]:
    """Sections of ~5 s: a cancel clicked once the second section shows text lands while it
    is still being written, even on a busy machine (the page shows a section's first text
    only once its first sentence is complete: the scaffolding filter holds the opening)."""
    stack = await browser_stack(SectionScript(token_delay_s=0.12))
    yield stack
    await stack.close()


def page_url(stack: Stack, token: str) -> str:
    return f"http://127.0.0.1:{stack.edge_port}/#token={token}"


async def run_log(stack: Stack, token: str, run_id: str) -> list[dict[str, Any]]:
    """Every event of the run, read back from the generator's log through the edge."""
    client = await stack.connect(token)
    await client.send({"type": "resume", "run_id": run_id, "after_seq": 0})
    return await client.run_to_end()


def check_page_matches_run(
    page: dict[str, Any], frames: list[dict[str, Any]], outline: dict[str, Any]
) -> None:
    """The page shows exactly what the run streamed: every section's text equals what the
    scripted LLM wrote (no duplicate, no gap), its sha256 equals section_end's, the summary
    panel shows the last summary, and the status is the run's."""
    ends = {f["section_id"]: f for f in frames if f["type"] == "section_end"}
    streamed = sections_text(frames)
    assert [block["id"] for block in page["blocks"]] == [s["id"] for s in outline["sections"]]
    for section, block in zip(outline["sections"], page["blocks"], strict=True):
        expected = streamed_text(section["title"])
        assert streamed[section["id"]] == expected
        assert block["text"] == expected, f"section {section['id']!r} shows different text"
        assert page["docgen"]["sections"][section["id"]] == expected
        assert block["state"] == "ended"
        assert block["sha256"] == ends[section["id"]]["text_sha256"]
        assert block["sha256"] == sha256(block["text"])
        assert block["verified"] == "true"  # the page's own check (crypto.subtle)
        assert section["title"] in block["title"]
    last_summary = [f for f in frames if f["type"] == "summary_update"][-1]
    assert page["summary"] == last_summary["summary"]
    assert page["summaryVersion"] == str(last_summary["version"])
    assert last_summary["method"] in page["summaryMeta"]
    assert frames[-1]["type"] == "run_end" and frames[-1]["status"] == "completed"
    assert page["runStatus"] == "completed"
    assert page["docgen"]["lastSeq"] == frames[-1]["seq"]
    n = len(outline["sections"])
    assert page["sectionsCount"] == f"{n} / {n}"


def check_token_stays_in_the_fragment(log: dict[str, Any], token: str) -> None:
    assert log["requests"], "the driver recorded no request"
    assert all(token not in url for url in log["requests"])
    assert all(token not in ws["url"] for ws in log["websockets"])


def sent_frames(log: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Per socket, what the page sent, without the client's application pings (one every
    20 s while open: a slow machine stretches a run past that)."""
    sockets = [[json.loads(payload) for payload in ws["sent"]] for ws in log["websockets"]]
    return [[frame for frame in frames if frame["type"] != "ping"] for frames in sockets]


@pytest.mark.browser
@pytest.mark.timeout(400)  # includes a first `npm ci`
async def test_page_streams_a_whole_run_with_a_retried_section(
    page_driver: list[str], stack_with_a_retry: Stack
) -> None:
    stack = stack_with_a_retry
    token = stack.token("alice")
    ARTIFACTS.mkdir(exist_ok=True)
    plan = {
        "failure_screenshot": str(ARTIFACTS / "browser-run-failure.png"),
        "steps": [
            {"do": "goto"},
            {"do": "wait_for", "js": CONNECTED},
            # The prefilled example outline, exactly as a user would send it.
            {"do": "eval", "name": "outline", "js": OUTLINE_IN_EDITOR},
            {"do": "click", "selector": "#generate"},
            {"do": "wait_for", "js": COMPLETED, "timeout_ms": 60000},
            {"do": "eval", "name": "page", "js": PAGE_SNAPSHOT},
            # For humans: what a finished run looks like (test-artifacts/, kept by the run).
            {"do": "screenshot", "path": str(ARTIFACTS / "browser-run.png")},
            {"do": "download", "selector": "#download", "name": "markdown"},
            {"do": "eval", "name": "download", "js": "window.docgen.lastDownload"},
        ],
    }
    final = await drive(page_driver, page_url(stack, token), plan)
    page, outline = final["results"]["page"], final["results"]["outline"]
    assert len(outline["sections"]) == 4

    frames = await run_log(stack, token, page["docgen"]["runId"])
    retried = [f for f in frames if f["type"] == "section_start" and f["attempt"] == 2]
    assert [f["index"] for f in retried] == [1], "the scripted break should retry section 2 once"
    check_page_matches_run(page, frames, outline)
    assert not any("error" in notice.lower() for notice in page["notices"]), page["notices"]
    # "Download Markdown" saves exactly the streamed text under its headings.
    streamed = sections_text(frames)
    expected = render_markdown(
        outline["title"], [(s["title"], streamed[s["id"]]) for s in outline["sections"]]
    )
    markdown = final["results"]["markdown"]
    assert markdown["text"] == expected
    assert markdown["filename"] == f"{outline['document_id']}.md"
    assert final["results"]["download"]["text"] == expected
    assert final["results"]["download"]["source"] in ("export", "local")

    log = final["log"]
    check_token_stays_in_the_fragment(log, token)
    assert log["page_errors"] == []
    assert [m for m in log["console"] if m["type"] == "error"] == []
    assert len(log["websockets"]) == 1
    assert log["websockets"][0]["url"] == f"ws://127.0.0.1:{stack.edge_port}/v1/ws"
    [generate] = sent_frames(log)[0]
    assert generate["type"] == "generate" and generate["outline"] == outline
    # The page runs on the first-party client, served by the edge.
    assert f"http://127.0.0.1:{stack.edge_port}/static/docgen.js" in log["requests"]
    assert (ARTIFACTS / "browser-run.png").stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.timeout(400)
async def test_page_reconnects_and_resumes_after_an_edge_restart(
    page_driver: list[str], slow_stack: Stack
) -> None:
    stack = slow_stack
    token = stack.token("bob")
    outline_file = next(p for p in EXAMPLE_OUTLINES if p.name == "city-bike-share.json")
    outline = json.loads(outline_file.read_text(encoding="utf-8"))
    ARTIFACTS.mkdir(exist_ok=True)
    plan = {
        "failure_screenshot": str(ARTIFACTS / "browser-restart-failure.png"),
        "steps": [
            {"do": "goto"},
            {"do": "wait_for", "js": CONNECTED},
            {"do": "fill", "selector": "#outline-editor", "value": json.dumps(outline, indent=2)},
            {"do": "click", "selector": "#generate"},
            {"do": "wait_for", "js": SECOND_SECTION_HAS_TEXT},
            {"do": "eval", "name": "before", "js": MID_RUN_STATE},
            {"do": "screenshot", "path": str(ARTIFACTS / "browser-midrun.png")},
            {"do": "signal", "name": "READY_FOR_RESTART"},
            {"do": "wait_for", "js": COMPLETED, "timeout_ms": 60000},
            {"do": "eval", "name": "page", "js": PAGE_SNAPSHOT},
            {"do": "screenshot", "path": str(ARTIFACTS / "browser-restart.png")},
        ],
    }
    restarts: list[int] = []

    async def restart_edge() -> None:
        await stack.restart_edge()
        restarts.append(stack.edge_port)

    final = await drive(
        page_driver, page_url(stack, token), plan, {"READY_FOR_RESTART": restart_edge}
    )
    before, page = final["results"]["before"], final["results"]["page"]
    assert restarts == [stack.edge_port]
    assert before["runStatus"] == "running", "the edge must restart in the middle of the run"

    frames = await run_log(stack, token, page["docgen"]["runId"])
    check_page_matches_run(page, frames, outline)
    assert before["lastSeq"] < frames[-1]["seq"]

    # The page saw the 4000 close, opened a new socket and resumed from its cursor: one
    # generate in all, then a resume of the same run after at least what it had before.
    log = final["log"]
    check_token_stays_in_the_fragment(log, token)
    assert log["page_errors"] == []
    assert page["docgen"]["reconnects"] >= 1
    assert any("(4000" in notice for notice in page["notices"]), page["notices"]
    sockets = sent_frames(log)
    assert len(sockets) >= 2
    assert log["websockets"][0]["closed"]
    sent = [frame for frames_ in sockets for frame in frames_]
    assert [f["type"] for f in sent].count("generate") == 1
    resumes = [f for f in sent if f["type"] == "resume"]
    assert resumes, "the page never sent resume"
    assert all(r["run_id"] == page["docgen"]["runId"] for r in resumes)
    assert resumes[0]["after_seq"] >= before["lastSeq"]


@pytest.mark.browser
@pytest.mark.timeout(400)
async def test_cancel_stops_the_run_and_keeps_what_was_written(
    page_driver: list[str], slower_stack: Stack
) -> None:
    stack = slower_stack
    token = stack.token("carol")
    ARTIFACTS.mkdir(exist_ok=True)
    plan = {
        "failure_screenshot": str(ARTIFACTS / "browser-cancel-failure.png"),
        "steps": [
            {"do": "goto"},
            {"do": "wait_for", "js": CONNECTED},
            {"do": "eval", "name": "outline", "js": OUTLINE_IN_EDITOR},
            {"do": "click", "selector": "#generate"},
            {"do": "wait_for", "js": SECOND_SECTION_HAS_TEXT},
            {"do": "click", "selector": "#cancel"},
            {"do": "wait_for", "js": CANCELLED},
            {"do": "eval", "name": "page", "js": PAGE_SNAPSHOT},
            {"do": "eval", "name": "buttons", "js": BUTTONS_DISABLED},
        ],
    }
    final = await drive(page_driver, page_url(stack, token), plan)
    page, outline = final["results"]["page"], final["results"]["outline"]
    frames = await run_log(stack, token, page["docgen"]["runId"])
    assert frames[-1]["type"] == "run_end" and frames[-1]["status"] == "cancelled"
    ends = {f["section_id"]: f for f in frames if f["type"] == "section_end"}
    streamed = sections_text(frames)
    blocks = {block["id"]: block for block in page["blocks"]}
    first, second, *rest = (s["id"] for s in outline["sections"])
    assert blocks[first]["finishReason"] == "stop" and blocks[first]["text"] == streamed[first]
    # The section being written ends as cancelled with the text streamed so far, intact.
    assert ends[second]["finish_reason"] == "cancelled"
    assert blocks[second]["finishReason"] == "cancelled"
    assert blocks[second]["text"] == streamed[second]
    assert blocks[second]["sha256"] == ends[second]["text_sha256"] == sha256(streamed[second])
    assert all(blocks[i]["state"] == "not-written" and blocks[i]["text"] == "" for i in rest)
    assert page["sectionsCount"] == f"1 / {len(outline['sections'])}"
    # The totals count what was written, the cancelled section's tokens too (run_end's count
    # only completed sections).
    written = sum(f["usage"]["output_tokens"] for f in ends.values())
    assert written > frames[-1]["totals"]["output_tokens"]
    assert page["tokensWritten"] == str(written)
    assert "in the cancelled section" in page["tokensCount"]
    assert page["badges"][len(ends) :] == ["not written"] * len(rest)
    assert final["results"]["buttons"] == {"generate": False, "cancel": True}
    sent = sent_frames(final["log"])[0]
    assert [f["type"] for f in sent] == ["generate", "cancel"]
    assert sent[1]["run_id"] == page["docgen"]["runId"]


ERRORS_NEXT_TO_GENERATE = """(() => ({
  notices: [...document.querySelectorAll('#errors .notice')].map((n) => ({
    level: n.className.replace('notice', '').trim(), text: n.textContent})),
  afterActions: document.querySelector('.actions').nextElementSibling.id,
  gap: document.querySelector('#errors').getBoundingClientRect().top
    - document.querySelector('.actions').getBoundingClientRect().bottom,
  newestInView: (document.querySelector('#errors .notice')?.getBoundingClientRect().bottom
    ?? 0) <= innerHeight,
}))()"""
TITLE_SHOWN = "document.querySelector('#document-title').textContent"
HAS_ERROR_NOTICE = "document.querySelectorAll('#errors .notice.error').length"


@pytest.mark.browser
@pytest.mark.timeout(400)
async def test_a_bad_outline_is_explained_next_to_generate_and_cleared_by_the_next_run(
    page_driver: list[str], slow_stack: Stack
) -> None:
    stack = slow_stack
    example = next(p for p in EXAMPLE_OUTLINES if p.name == "city-bike-share.json")
    outline = json.loads(example.read_text(encoding="utf-8"))
    # What a newcomer writes first: no document_id, and a section of 0 tokens.
    minimal = {"title": "Tomatoes", "sections": [{"id": "a", "title": "Pots", "target_tokens": 0}]}
    plan = {
        "failure_screenshot": str(ARTIFACTS / "browser-errors-failure.png"),
        "steps": [
            {"do": "goto"},
            {"do": "wait_for", "js": CONNECTED},
            {"do": "fill", "selector": "#outline-editor", "value": json.dumps(minimal)},
            {"do": "click", "selector": "#generate"},
            {"do": "wait_for", "js": HAS_ERROR_NOTICE},
            {"do": "fill", "selector": "#outline-editor", "value": "{not json"},
            {"do": "click", "selector": "#generate"},
            {"do": "wait_for", "js": f"{HAS_ERROR_NOTICE} === 2"},
            {"do": "eval", "name": "errors", "js": ERRORS_NEXT_TO_GENERATE},
            {"do": "screenshot", "path": str(ARTIFACTS / "browser-errors.png")},
            # The example picker loads a bundled outline into the editor; it then runs.
            {"do": "select", "selector": "#example", "value": example.name},
            {"do": "eval", "name": "picked", "js": OUTLINE_IN_EDITOR},
            {"do": "click", "selector": "#generate"},
            {"do": "wait_for", "js": COMPLETED, "timeout_ms": 90000},
            {"do": "eval", "name": "after", "js": ERRORS_NEXT_TO_GENERATE},
        ],
    }
    final = await drive(page_driver, page_url(stack, stack.token("dora")), plan)
    errors, after = final["results"]["errors"], final["results"]["after"]
    assert errors["afterActions"] == "errors" and 0 <= errors["gap"] < 24 and errors["newestInView"]
    newest, older = errors["notices"]
    assert newest["level"] == older["level"] == "error"
    assert "The outline is not valid JSON" in newest["text"]  # newest on top
    assert older["text"].endswith(
        'the outline has no "document_id"; add it. "document_id": a name you choose for the '
        'document, 1–128 characters, e.g. "my-guide". (invalid_frame at $.outline)'
    )
    assert final["results"]["picked"] == outline
    assert after["notices"] == [], after  # the run that worked cleared them


@pytest.mark.browser
@pytest.mark.timeout(400)
async def test_a_section_cut_at_its_length_limit_looks_cut(page_driver: list[str]) -> None:
    # Request 0 is the first section: the LLM stops it at max_tokens (finish_reason length).
    stack = await browser_stack(SectionScript(cut_at_length=frozenset({0})))
    try:
        plan = {
            "failure_screenshot": str(ARTIFACTS / "browser-length-failure.png"),
            "steps": [
                {"do": "goto"},
                {"do": "wait_for", "js": CONNECTED},
                {"do": "click", "selector": "#generate"},
                {"do": "wait_for", "js": COMPLETED, "timeout_ms": 60000},
                {"do": "eval", "name": "page", "js": PAGE_SNAPSHOT},
                {
                    "do": "eval",
                    "name": "marker",
                    "js": "getComputedStyle(document.querySelector("
                    "'[data-finish-reason=length] .section-text'), '::after').content",
                },
            ],
        }
        final = await drive(page_driver, page_url(stack, stack.token("lena")), plan)
    finally:
        await stack.close()
    page = final["results"]["page"]
    first, *others = page["blocks"]
    assert first["finishReason"] == "length" and first["verified"] == "true"
    assert page["badges"][0].startswith("cut at length")
    assert "cut at its length limit" in final["results"]["marker"]
    assert all(b["finishReason"] == "stop" for b in others)
    assert not any(badge.startswith("cut") for badge in page["badges"][1:])


@pytest.mark.browser
@pytest.mark.timeout(400)
async def test_generate_by_plan_id_takes_the_outline_from_the_planner(
    page_driver: list[str],
) -> None:
    example = next(p for p in EXAMPLE_OUTLINES if p.name == "intro-to-sourdough.json")
    outline = json.loads(example.read_text(encoding="utf-8"))
    planner = ScriptedPlanner(outlines={outline["document_id"]: outline})
    await planner.start()
    stack = await start_stack(ScriptedLLM(SectionScript()), generator={"planner_url": planner.url})
    try:
        await stack.restart_edge()  # its Origin allowlist then names the real port
        token = stack.token("pablo")
        plan = {
            "failure_screenshot": str(ARTIFACTS / "browser-plan-failure.png"),
            "steps": [
                {"do": "goto"},
                {"do": "wait_for", "js": CONNECTED},
                {"do": "select", "selector": "#example", "value": "__plan__"},
                {"do": "fill", "selector": "#plan-id", "value": outline["document_id"]},
                {"do": "click", "selector": "#generate"},
                {"do": "wait_for", "js": COMPLETED, "timeout_ms": 90000},
                {"do": "eval", "name": "page", "js": PAGE_SNAPSHOT},
                {"do": "eval", "name": "title", "js": TITLE_SHOWN},
            ],
        }
        final = await drive(page_driver, page_url(stack, token), plan)
        frames = await run_log(stack, token, final["results"]["page"]["docgen"]["runId"])
    finally:
        await stack.close()
        await planner.stop()
    page = final["results"]["page"]
    assert [b["id"] for b in page["blocks"]] == [s["id"] for s in outline["sections"]]
    assert final["results"]["title"] == outline["title"]
    check_page_matches_run(page, frames, outline)
    [generate] = sent_frames(final["log"])[0]
    assert generate["plan"] == {"document_id": outline["document_id"]}
    assert "outline" not in generate
    # The planner was asked once, with the page's own token.
    assert [r.document_id for r in planner.requests] == [outline["document_id"]]
    assert planner.requests[0].headers["Authorization"] == f"Bearer {token}"


README_EXAMPLE = re.compile(r"## Stream a document in 15 lines\n\n```html\n(.*?)```", re.DOTALL)


@pytest.mark.browser
@pytest.mark.timeout(400)
async def test_the_js_client_readme_example_streams_a_document_into_a_page(
    page_driver: list[str],
) -> None:
    """clients/js/README.md's 15 lines, as a reader would paste them into their own page on
    their own origin: only the edge's address is filled in."""
    match = README_EXAMPLE.search((ROOT / "clients" / "js" / "README.md").read_text("utf-8"))
    assert match, "the README lost its 15-line example"
    snippet = match.group(1)
    assert len(snippet.strip().splitlines()) <= 17  # 15 lines of script, plus <article>/<script>
    page_port = free_port()
    stack = await start_stack(
        ScriptedLLM(SectionScript()),
        edge={"allowed_origins": (f"http://127.0.0.1:{page_port}",)},
    )
    runner: web.AppRunner | None = None
    try:
        await stack.restart_edge()
        edge = f"127.0.0.1:{stack.edge_port}"
        html = snippet.replace('"/static/docgen.js"', f'"http://{edge}/static/docgen.js"')
        html = html.replace("${location.host}", edge)
        page = f"<!doctype html><meta charset=utf-8><title>my page</title>{html}"

        async def serve(_request: web.Request) -> web.Response:
            return web.Response(text=page, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", serve)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", page_port).start()
        expected = streamed_text("Pots and soil")
        done = f"document.querySelector('#doc p')?.textContent === {json.dumps(expected)}"
        plan = {
            "failure_screenshot": str(ARTIFACTS / "browser-readme-failure.png"),
            "steps": [
                {"do": "goto"},
                {"do": "wait_for", "js": done, "timeout_ms": 60000},
                {"do": "eval", "name": "doc", "js": "document.querySelector('#doc').innerHTML"},
            ],
        }
        token = stack.token("reader")
        final = await drive(page_driver, f"http://127.0.0.1:{page_port}/#token={token}", plan)
    finally:
        if runner is not None:
            await runner.cleanup()
        await stack.close()
    assert final["results"]["doc"] == f"<h2>Pots and soil</h2><p>{expected}</p>"
    assert final["log"]["page_errors"] == []


def test_the_pages_example_picker_holds_the_bundled_outlines() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "page_examples.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the example outlines --------------------------------------------------------------------


def test_example_outlines_are_valid_generate_outlines() -> None:
    assert len(EXAMPLE_OUTLINES) == 5  # three English, one Spanish, one long (issue 15)
    validator = FrameValidator()
    for path in EXAMPLE_OUTLINES:
        outline = json.loads(path.read_text(encoding="utf-8"))
        assert set(outline) == {"document_id", "title", "sections"}, path.name
        frame = {"type": "generate", "outline": outline}
        assert validator.validate_client(frame) is None, path.name
        assert 3 <= len(outline["sections"]) <= 8, path.name
        ids = [s["id"] for s in outline["sections"]]
        assert len(set(ids)) == len(ids) and all(SECTION_ID.match(i) for i in ids), path.name
        for section in outline["sections"]:
            assert set(section) == {"id", "title", "brief", "target_tokens"}, path.name
            assert 80 <= section["target_tokens"] <= 600, path.name
    outlines = [json.loads(path.read_text(encoding="utf-8")) for path in EXAMPLE_OUTLINES]
    targets = {s["target_tokens"] for outline in outlines for s in outline["sections"]}
    assert min(targets) <= 120 and max(targets) >= 450  # varied lengths across the examples
