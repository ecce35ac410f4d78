"""The annotated transcripts in docs/protocol.md, produced by real runs of the in-process stack
(a scripted LLM with fixed texts), with the values that differ between runs replaced by
placeholders. `scripts/protocol_transcript.py` writes them into the doc between marker
comments; tests/test_protocol_doc.py checks the doc still matches a fresh run."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.stack import ProtocolClient, Stack, start_stack

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
NAMES = ("run", "resume", "cancel", "retry", "failed", "errors", "answers", "again")

# Values that differ from one run to the next.
VOLATILE = {
    "ts": "<unix ms>",
    "latency_ms": "<ms>",
    "duration_ms": "<ms>",
    "ttft_ms": "<ms>",
    "session_id": "<session id>",
    "token_expires_at": "<unix ms>",
    "started_at": "<unix ms>",
    "version": "<server version>",
}
# `version` is also the summary's version number (an integer): only strings are replaced.
VOLATILE_STRINGS_ONLY = frozenset({"version"})

SOURDOUGH: dict[str, Any] = {
    "document_id": "sourdough-101",
    "title": "Sourdough at home",
    "sections": [
        {
            "id": "intro",
            "title": "What sourdough is",
            "brief": "Wild yeast and bacteria; why it tastes sour.",
            "target_tokens": 120,
        },
        {
            "id": "starter",
            "title": "Keeping a starter",
            "brief": "Feeding schedule and signs of health.",
            "target_tokens": 120,
        },
    ],
}
CANCELLED: dict[str, Any] = {
    "document_id": "cancel-demo",
    "title": "A run that is cancelled",
    "sections": [
        {"id": "long", "title": "A long section", "target_tokens": 400},
        {"id": "never", "title": "A section never started", "target_tokens": 400},
    ],
}
RETRIED: dict[str, Any] = {
    "document_id": "retry-demo",
    "title": "A section that is retried",
    "sections": [{"id": "only", "title": "The only section", "target_tokens": 60}],
}
REFUSED: dict[str, Any] = {
    "document_id": "refused-demo",
    "title": "A run the LLM refuses",
    "sections": [
        {"id": "first", "title": "First", "target_tokens": 60},
        {"id": "second", "title": "Second", "target_tokens": 60},
    ],
}
STALLED_TITLE = "A run that waits"

# The LLM's answers, as the tokens it streams (each becomes one `section_chunk`).
SECTION_TOKENS = {
    "What sourdough is": ["Sourdough is bread", " raised by wild yeast", " and lactic bacteria."],
    "Keeping a starter": ["Feed the starter", " equal weights of flour and water", " every day."],
    # A first line that is whole: the generator holds back an opening line until its end
    # (it could still be a preamble or a title echo), and these streams stall after two.
    "A long section": ["This section is long.\n", "It would go on", " but is cancelled."],
}
FIRST_ATTEMPT = ["The first attempt breaks.\n", "It stalls here", " and never ends."]
SECOND_ATTEMPT = ["The second attempt", " is whole."]


# The section prompt's request: '… for the part "<section>" of a report titled "<document>".'
_REQUEST = re.compile(r'"([^"]*)" (?:of a report titled|de un informe titulado) "([^"]*)"')


def _document_title(body: dict[str, Any]) -> str:
    match = _REQUEST.search(str(body["messages"][-1]["content"]))
    return match.group(2) if match else ""


def _section_title(body: dict[str, Any]) -> str:
    match = _REQUEST.search(str(body["messages"][-1]["content"]))
    return match.group(1) if match else ""


class ScriptedAnswers:
    """Decides each LLM answer from the prompt, so every scenario is deterministic."""

    def __init__(self) -> None:
        self.requests_per_document: Counter[str] = Counter()

    def __call__(self, _n: int, body: dict[str, Any]) -> Reply:
        document = _document_title(body)
        self.requests_per_document[document] += 1
        if document == REFUSED["title"]:
            return Reply(status=400)
        if document == STALLED_TITLE:
            return Reply(tokens=["Waiting"], stall_after=0)
        if document == CANCELLED["title"]:
            # Two tokens, then silence: the cancel arrives mid-section, at a known point.
            return Reply(tokens=SECTION_TOKENS["A long section"], stall_after=2)
        if document == RETRIED["title"]:
            if self.requests_per_document[document] == 1:
                return Reply(tokens=FIRST_ATTEMPT, stall_after=2)
            return Reply(tokens=SECOND_ATTEMPT)
        return Reply(tokens=SECTION_TOKENS[_section_title(body)])


def describe(frame: dict[str, Any]) -> str:
    """The annotation of a server frame."""
    kind = frame["type"]
    head = f"← {kind}" + (f" (seq {frame['seq']})" if "seq" in frame else "")
    if kind == "run_started":
        order = ", ".join(frame["sections"])
        return f"{head}: the run exists; it will write {order}, in this order"
    if kind == "section_start":
        if frame["attempt"] > 1:
            return (
                f"{head}: {frame['section_id']} restarts, attempt {frame['attempt']}: "
                "discard the text assembled for it so far"
            )
        return f"{head}: {frame['section_id']} (index {frame['index']}) starts with empty text"
    if kind == "section_chunk":
        return f"{head}: append delta to {frame['section_id']}"
    if kind == "section_end":
        return (
            f"{head}: {frame['section_id']} ended ({frame['finish_reason']}); "
            "sha256 of its assembled text = text_sha256"
        )
    if kind == "summary_update":
        return (
            f"{head}: summary version {frame['version']}, through {frame['through_section']}, "
            "replaces the previous one"
        )
    if kind == "run_end":
        return f"{head}: the last event of every run; status {frame['status']}"
    if kind == "error" and "seq" in frame:
        return f"{head}: {frame['code']}, an event of the run (replayed by resume)"
    if kind == "error":
        answered = f" to request_id {frame['request_id']}" if "request_id" in frame else ""
        return f"← error: {frame['code']}, the answer{answered}; no seq: not part of a run's log"
    if kind == "pong":
        return f"{head}: no seq: not part of any run"
    if kind == "session":
        return f"{head}: the first frame on every socket; no seq"
    if kind == "ack":
        answered = f" to request_id {frame['request_id']}" if "request_id" in frame else ""
        detail = f", status {frame['status']}" if "status" in frame else ""
        return f"← ack of {frame['command']}{detail}: the answer{answered}; no seq"
    return head


class Transcript:
    """One transcript: annotated client and server frames, rendered as a `jsonc` block."""

    def __init__(self, known_run_ids: set[str]) -> None:
        self._lines: list[str] = []
        self._known_run_ids = known_run_ids
        self._placeholders: dict[str, str] = {}

    def note(self, text: str) -> None:
        self._lines.append(f"// {text}")

    def client(self, frame: dict[str, Any], note: str) -> None:
        self._lines.append(f"// → {frame['type']}" + (f": {note}" if note else ""))
        self._lines.append(self._pretty(frame))

    def client_raw(self, text: str, note: str) -> None:
        self._lines.append(f"// → {note}")
        self._lines.append(text)

    def server(self, frame: dict[str, Any], note: str = "") -> None:
        if frame.get("type") == "run_started":
            self._known_run_ids.add(frame["run_id"])
        self._lines.append(f"// {describe(frame)}" + (f". {note}" if note else ""))
        self._lines.append(self._pretty(frame))

    def render(self) -> str:
        return "```jsonc\n" + "\n".join(self._lines) + "\n```"

    def _pretty(self, frame: dict[str, Any]) -> str:
        return json.dumps(self._normalise(frame), indent=2, ensure_ascii=False)

    def _normalise(self, value: Any, key: str | None = None) -> Any:
        if key in VOLATILE and (key not in VOLATILE_STRINGS_ONLY or isinstance(value, str)):
            return VOLATILE[key]
        if isinstance(value, dict):
            return {k: self._normalise(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._normalise(v) for v in value]
        if isinstance(value, str) and value in self._known_run_ids:
            if value not in self._placeholders:
                number = len(self._placeholders) + 1
                self._placeholders[value] = "<run_id>" if number == 1 else f"<run_id {number}>"
            return self._placeholders[value]
        return value


class Recorder:
    """A protocol client whose frames, both ways, go into a transcript."""

    def __init__(self, client: ProtocolClient, transcript: Transcript) -> None:
        self.client = client
        self.transcript = transcript

    async def send(self, frame: dict[str, Any], note: str) -> None:
        self.transcript.client(frame, note)
        await self.client.send(frame)

    async def recv(self, note: str = "") -> dict[str, Any]:
        frame = await self.client.recv()
        self.transcript.server(frame, note)
        return frame

    async def recv_until(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        while sum(f["type"] == kind for f in frames) < count:
            frames.append(await self.recv())
        return frames


def _handshake_note(client: ProtocolClient) -> str:
    return (
        "GET /v1/ws offering subprotocols docgen.v1, bearer.<JWT> → HTTP 101, "
        f"subprotocol {client.ws.protocol} selected"
    )


async def _run(stack: Stack, known: set[str]) -> tuple[str, str, int]:
    """A whole 2-section run. Returns the transcript, the run's id and its last seq."""
    transcript = Transcript(known)
    client = await stack.connect(stack.token("alice"))
    transcript.note(_handshake_note(client))
    transcript.server(client.hello, "Who the server thinks you are, and your limits")
    alice = Recorder(client, transcript)
    await alice.send({"type": "ping", "request_id": "p-1"}, "is the socket alive?")
    await alice.recv()
    await alice.send(
        {"v": 1, "type": "generate", "request_id": "r-1", "outline": SOURDOUGH},
        "start a run; request_id is echoed in run_started",
    )
    frames = await alice.recv_until("run_end")
    run_id, last_seq = frames[0]["run_id"], frames[-1]["seq"]
    await alice.send(
        {"type": "cancel", "request_id": "c-0", "run_id": run_id},
        "the run has already ended, so cancel changes nothing",
    )
    await alice.recv("It says how the run had ended")
    return transcript.render(), run_id, last_seq


async def _resume(stack: Stack, known: set[str]) -> str:
    transcript = Transcript(known)
    first = Recorder(await stack.connect(stack.token("alice")), transcript)
    await first.send(
        {"type": "generate", "request_id": "r-2", "outline": SOURDOUGH}, "the same outline again"
    )
    frames = await first.recv_until("section_chunk", count=2)
    last_seq = frames[-1]["seq"]
    # The socket dies without a close handshake, like a laptop lid closing.
    first.client.ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await first.client.session.close()
    transcript.note(
        f"✂ the connection drops (no close frame). The client has every event up to seq {last_seq}"
    )
    transcript.note(
        "the run goes on without it (for up to DOCGEN_RUN_GRACE_S with nobody attached)"
    )
    client = await stack.connect(stack.token("alice"))
    transcript.note("a new socket, possibly to another edge: " + _handshake_note(client))
    second = Recorder(client, transcript)
    await second.send(
        {
            "type": "resume",
            "request_id": "r-3",
            "run_id": frames[0]["run_id"],
            "after_seq": last_seq,
        },
        "every event after the last seq seen: stored ones first, then live ones",
    )
    await second.recv("Before any replayed event")
    await second.recv_until("run_end")
    return transcript.render()


async def _cancel(stack: Stack, known: set[str]) -> str:
    transcript = Transcript(known)
    alice = Recorder(await stack.connect(stack.token("alice")), transcript)
    await alice.send({"type": "generate", "request_id": "r-4", "outline": CANCELLED}, "")
    frames = await alice.recv_until("section_chunk", count=2)
    await alice.send(
        {"type": "cancel", "request_id": "c-1", "run_id": frames[0]["run_id"]},
        "stop the run; the LLM request is closed at once",
    )
    # The ack and the run's last events come from different places (the generator's answer,
    # the run's stream): their order is not fixed, so the transcript shows a stable one.
    rest = [await alice.client.recv() for _ in range(3)]
    rest.sort(key=lambda f: (f["type"] != "ack", f.get("seq", 0)))
    alice.transcript.server(rest[0], "The run was running when the cancel arrived")
    alice.transcript.server(rest[1], "Its text is what the chunks so far carried")
    alice.transcript.server(rest[2], "No further section starts")
    await alice.send(
        {"type": "cancel", "request_id": "c-2", "run_id": frames[0]["run_id"]},
        "again: idempotent",
    )
    await alice.recv("Nothing changed: the run had ended cancelled")
    return transcript.render()


async def _retry(stack: Stack, known: set[str]) -> str:
    transcript = Transcript(known)
    alice = Recorder(await stack.connect(stack.token("alice")), transcript)
    await alice.send({"type": "generate", "request_id": "r-5", "outline": RETRIED}, "")
    await alice.recv_until("section_chunk", count=2)
    transcript.note(
        "the LLM stream stalls here (no token for DOCGEN_LLM_STALL_TIMEOUT_S): the section is "
        "written again from scratch"
    )
    await alice.recv_until("run_end")
    return transcript.render()


async def _failed(stack: Stack, known: set[str]) -> str:
    transcript = Transcript(known)
    alice = Recorder(await stack.connect(stack.token("alice")), transcript)
    await alice.send(
        {"type": "generate", "request_id": "r-6", "outline": REFUSED},
        "the LLM answers this run's requests with HTTP 400",
    )
    await alice.recv_until("run_end")
    return transcript.render()


async def _errors(stack: Stack, known: set[str], finished_run_id: str) -> str:
    transcript = Transcript(known)
    alice = Recorder(await stack.connect(stack.token("alice")), transcript)

    async def answer(frame: dict[str, Any], note: str) -> None:
        await alice.send(frame, note)
        await alice.recv()

    text = '{"type": "ping", "request_id": '
    transcript.client_raw(text, "text that is not JSON")
    await alice.client.ws.send_str(text)
    await alice.recv()
    transcript.note("→ a binary message (5 bytes)")
    await alice.client.ws.send_bytes(b"hello")
    await alice.recv()
    await answer({"type": "subscribe", "request_id": "e-1"}, "not a client frame type")
    await answer(
        {"type": "resume", "request_id": "e-2", "run_id": finished_run_id},
        "a field is missing",
    )
    too_long = {**SOURDOUGH, "sections": [{**SOURDOUGH["sections"][0], "target_tokens": 5000}]}
    await answer(
        {"type": "generate", "request_id": "e-3", "outline": too_long}, "target_tokens over 4096"
    )
    twice = {**SOURDOUGH, "sections": [SOURDOUGH["sections"][0], SOURDOUGH["sections"][0]]}
    await answer(
        {"type": "generate", "request_id": "e-4", "outline": twice},
        "valid for the schema, but two sections share an id",
    )
    await answer(
        {"type": "resume", "request_id": "e-5", "run_id": "run_unknown", "after_seq": 0},
        "unknown, expired (DOCGEN_RUN_TTL_S) or another user's run: all alike",
    )
    await answer(
        {"type": "resume", "request_id": "e-6", "run_id": finished_run_id, "after_seq": 9999},
        "a cursor past the end of the run's log",
    )
    await answer(
        {"type": "cancel", "request_id": "e-7", "run_id": "run_unknown"},
        "cancel of an unknown run",
    )
    await _while_four_runs_wait(
        stack,
        lambda: answer(
            {"type": "generate", "request_id": "e-8", "outline": SOURDOUGH},
            "a fifth unfinished run for this user (DOCGEN_MAX_RUNS_PER_USER is 4)",
        ),
    )
    return transcript.render()


async def _answers(stack: Stack, known: set[str], finished: str, last_seq: int) -> str:
    """resume at the end, runs, refresh: each command answered by one `ack` or error."""
    transcript = Transcript(known)
    alice = Recorder(await stack.connect(stack.token("alice")), transcript)
    await alice.send(
        {"type": "resume", "request_id": "a-1", "run_id": finished, "after_seq": last_seq},
        "a cursor at the end of an ended run",
    )
    await alice.recv("Nothing follows it: the run has nothing after its run_end")
    await alice.send({"type": "runs", "request_id": "a-2"}, "which of my runs can I resume?")
    await alice.recv("Runs of other users are never listed")
    fresh = stack.token("alice", exp=int(time.time()) + 7200)
    await alice.send(
        {"type": "refresh", "request_id": "a-3", "token": fresh},
        "a new token for the same user (shown here as <JWT>)",
    )
    await alice.recv("The socket now lives until the new token expires")
    bob = stack.token("bob")
    await alice.send(
        {"type": "refresh", "request_id": "a-4", "token": bob}, "a token of another user"
    )
    await alice.recv("The socket keeps its current token")
    return transcript.render().replace(fresh, "<JWT>").replace(bob, "<JWT of bob>")


async def _again(stack: Stack, known: set[str]) -> str:
    """An idempotent generate: the socket dies before run_started; the same frame again."""
    transcript = Transcript(known)
    frame = {"type": "generate", "request_id": "g-1", "outline": SOURDOUGH}
    lost = Recorder(await stack.connect(stack.token("alice")), transcript)
    await lost.send(frame, "")
    lost.client.ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await lost.client.session.close()
    transcript.note("✂ the connection drops before run_started arrives: the run id is unknown")
    again = Recorder(await stack.connect(stack.token("alice")), transcript)
    transcript.note("a new socket: " + _handshake_note(again.client))
    await again.send(frame, "the same frame, same request_id: no second run starts")
    started = await again.recv("The same run, from seq 1 (whatever it had written meanwhile)")
    await again.client.recv_until(lambda f: f["type"] == "run_end")
    transcript.note("… the rest of the run, seq 2 to its run_end, as in the first transcript")
    assert started["seq"] == 1
    return transcript.render()


async def _while_four_runs_wait(stack: Stack, action: Callable[[], Awaitable[None]]) -> None:
    """Runs `action` while alice has four unfinished runs (kept out of the transcript)."""
    helper = await stack.connect(stack.token("alice"))
    waiting = {**SOURDOUGH, "title": STALLED_TITLE}
    run_ids = []
    for _ in range(4):
        await helper.send({"type": "generate", "outline": waiting})
        started = await helper.recv_until(lambda f: f["type"] == "run_started")
        run_ids.append(started[-1]["run_id"])
    await action()
    for run_id in run_ids:
        await helper.send({"type": "cancel", "run_id": run_id})
    ended = 0
    while ended < 4:
        ended += (await helper.recv())["type"] == "run_end"


async def produce() -> dict[str, str]:
    """Every transcript, by name, as the `jsonc` block that goes between its markers."""
    known: set[str] = set()
    blocks: dict[str, str] = {}
    answers = ScriptedAnswers()
    # A long stall timeout: the cancel scenario cancels a stalled stream.
    stack = await start_stack(
        ScriptedLLM(answers),
        generator={"llm_stall_timeout_s": 30.0, "summary_prompt_wait_s": 0.0},
        summary={"mode": "extractive"},
    )
    try:
        blocks["run"], run_id, last_seq = await _run(stack, known)
        blocks["answers"] = await _answers(stack, known, run_id, last_seq)
        blocks["resume"] = await _resume(stack, known)
        blocks["again"] = await _again(stack, known)
        blocks["cancel"] = await _cancel(stack, known)
        blocks["failed"] = await _failed(stack, known)
        blocks["errors"] = await _errors(stack, known, run_id)
    finally:
        await stack.close()
    # A short stall timeout: the retry scenario's first attempt stalls.
    stack = await start_stack(
        ScriptedLLM(ScriptedAnswers()),
        generator={"llm_stall_timeout_s": 0.3, "summary_prompt_wait_s": 0.0},
        summary={"mode": "extractive"},
    )
    try:
        blocks["retry"] = await _retry(stack, known)
    finally:
        await stack.close()
    return {name: blocks[name] for name in NAMES}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- transcript:{name}:start -->", f"<!-- transcript:{name}:end -->"


def read_blocks(doc: str) -> dict[str, str]:
    """The transcript blocks currently in the doc, by name (missing ones are absent)."""
    blocks: dict[str, str] = {}
    for name in NAMES:
        start, end = markers(name)
        if start in doc and end in doc:
            blocks[name] = doc.split(start, 1)[1].split(end, 1)[0].strip("\n")
    return blocks


def replace_blocks(doc: str, blocks: dict[str, str]) -> str:
    """The doc with each transcript block replaced; every marker pair must already be there."""
    for name, block in blocks.items():
        start, end = markers(name)
        if start not in doc or end not in doc:
            raise ValueError(f"docs/protocol.md lacks the markers {start} ... {end}")
        before, rest = doc.split(start, 1)
        _, after = rest.split(end, 1)
        doc = f"{before}{start}\n{block}\n{end}{after}"
    return doc


def run_sync() -> dict[str, str]:
    return asyncio.run(produce())
