"""Property-based conformance of the edge: client frames generated from the JSON Schemas
(hypothesis-jsonschema), valid and deliberately broken, thrown at one live stack over one
socket. Valid frames get their documented answer (revision 2: `ack` for `runs`, errors for
the unknown runs, the foreign tokens and the missing planner), invalid ones the documented
error code, the socket stays usable after every frame, and another user's run on another
socket completes whole."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from services.edge.schemas import FrameValidator
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import ProtocolClient, Stack, sections_text, start_stack

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
CLIENT_TYPES = ("generate", "resume", "cancel", "ping", "refresh", "runs")
VALIDATOR = FrameValidator()
# Enough to find a broken answer (each example is a round trip, a generate a whole run)
# while the module stays well under 30 s on two cores.
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

BYSTANDER_TEXT = " ".join(f"Sentence {i} of the bystander's section." for i in range(12))
BYSTANDER = {
    "document_id": "bystander",
    "title": "A run that must not notice",
    "sections": [
        {"id": f"b{i}", "title": f"Bystander section {i}", "target_tokens": 200} for i in range(3)
    ],
}


def scripted(_n: int, body: dict[str, Any]) -> Reply:
    if f'report titled "{BYSTANDER["title"]}"' in body["messages"][-1]["content"]:
        return Reply(tokens=words(BYSTANDER_TEXT), token_delay_s=0.01)
    return Reply(tokens=["Generated", " text."])


# --- the live stack, driven from synchronous hypothesis tests -------------------------------


@dataclass
class Live:
    """One stack for the module; `run` drives its event loop for one exchange at a time."""

    runner: asyncio.Runner
    stack: Stack
    fuzz: ProtocolClient
    bystander: ProtocolClient
    bystander_run: asyncio.Task[list[dict[str, Any]]]
    """Reads the bystander's socket while the fuzzing goes on, as a browser would: a socket
    nobody reads leaves the server's heartbeat pings unanswered, and the edge closes it."""
    bystander_frames: list[dict[str, Any]] = field(default_factory=list)
    probes: Iterator[int] = field(default_factory=itertools.count)
    fuzz_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The runs the fuzzing socket started, in order, with their frames: what `runs` must
    list, and what a `generate` repeating one's `request_id` must replay."""
    run_by_request: dict[str, str] = field(default_factory=dict)

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


async def _start(runner: asyncio.Runner) -> Live:
    # The frame-rate limit is lifted: this module sends frames back to back on purpose.
    stack = await start_stack(
        ScriptedLLM(scripted),
        edge={"frames_per_s": 100_000.0, "frame_burst": 100_000},
        summary={"mode": "extractive"},
    )
    bystander = await stack.connect(stack.token("bob"))
    await bystander.send({"type": "generate", "request_id": "bystander", "outline": BYSTANDER})
    first = await bystander.recv()
    assert first["type"] == "run_started", first
    # Generous: the task only advances while an exchange drives the loop.
    bystander_run = asyncio.create_task(bystander.run_to_end(timeout=600))
    fuzz = await stack.connect(stack.token("alice"))
    return Live(runner, stack, fuzz, bystander, bystander_run, [first])


async def _stop(live: Live) -> None:
    live.bystander_run.cancel()
    with contextlib.suppress(BaseException):
        await live.bystander_run
    await live.stack.close()


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with asyncio.Runner() as runner:
        live = runner.run(_start(runner))
        try:
            yield live
        finally:
            runner.run(_stop(live))


async def _probe(live: Live) -> None:
    """The socket still answers, and nothing unexpected was queued before the answer."""
    request_id = f"probe-{next(live.probes)}"
    await live.fuzz.send({"type": "ping", "request_id": request_id})
    frame = await live.fuzz.recv()
    assert frame == {"v": 1, "type": "pong", "ts": frame["ts"], "request_id": request_id}


# --- strategies -----------------------------------------------------------------------------


# Printable text with at least one non-space character: what a real outline holds. Without
# it, arbitrary Unicode nearly always contains a control character and the outline is refused.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*\Z"


def _generation_schema(frame_type: str, *, printable: bool = False) -> dict[str, Any]:
    """The frame's schema, made fit for hypothesis-jsonschema: no `$id`, ECMA `$` written as
    Python's `\\Z` (Python's `$` would also accept a trailing newline the edge refuses), and
    at most 3 sections so each generated run stays short. `printable` narrows the outline's
    texts to `PRINTABLE`. Every frame it describes is still valid."""
    schema = json.loads((SCHEMAS / "client" / f"{frame_type}.json").read_text(encoding="utf-8"))
    for key in ("$id", "$schema", "examples"):
        schema.pop(key, None)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and pattern.endswith("$"):
                node["pattern"] = pattern[:-1] + r"\Z"
            for child in node.values():
                fix(child)
        elif isinstance(node, list):
            for child in node:
                fix(child)

    fix(schema)
    if frame_type == "generate":
        outline = schema["properties"]["outline"]
        outline["properties"]["sections"]["maxItems"] = 3
        if printable:
            section = outline["properties"]["sections"]["items"]["properties"]
            for text in (
                outline["properties"]["document_id"],
                outline["properties"]["title"],
                section["title"],
                section["brief"],
            ):
                text["pattern"] = PRINTABLE
    return schema


VALID = {frame_type: from_schema(_generation_schema(frame_type)) for frame_type in CLIENT_TYPES}
PRINTABLE_GENERATE = from_schema(_generation_schema("generate", printable=True))
valid_frames = st.one_of(*VALID.values(), PRINTABLE_GENERATE, PRINTABLE_GENERATE)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def _with(frame: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(frame)
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return broken


def _without(frame: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in frame.items() if k != key}


@st.composite
def schema_violations(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with one thing broken, so it is invalid by construction."""
    frame: dict[str, Any] = draw(valid_frames)
    kind = frame["type"]
    breakers: list[dict[str, Any]] = [
        {**frame, draw(st.sampled_from(["extra", "seq", "runId", "after"])): draw(json_values)},
        _with(frame, ("v",), draw(st.sampled_from([0, 2, "1", None, 1.5]))),
        _with(frame, ("request_id",), draw(st.integers() | st.none() | st.lists(st.text()))),
        _with(frame, ("request_id",), "r" * draw(st.integers(129, 400))),
    ]
    if kind in ("resume", "cancel"):
        breakers += [
            _without(frame, "run_id"),
            _with(frame, ("run_id",), ""),
            _with(frame, ("run_id",), "x" * 129),
            _with(frame, ("run_id",), draw(st.integers() | st.none())),
        ]
    if kind == "resume":
        breakers += [
            _without(frame, "after_seq"),
            _with(frame, ("after_seq",), draw(st.integers(max_value=-1))),
            _with(frame, ("after_seq",), draw(st.integers(min_value=2**53))),
            _with(frame, ("after_seq",), draw(st.sampled_from(["3", 1.5, None, [], True]))),
        ]
    if kind == "refresh":
        breakers += [
            _without(frame, "token"),
            _with(frame, ("token",), ""),
            _with(frame, ("token",), "t" * 8193),
            _with(frame, ("token",), draw(st.integers() | st.none())),
        ]
    if kind == "generate" and "plan" in frame:
        breakers += [
            _without(frame, "plan"),
            {**frame, "outline": SMALL_OUTLINE},  # exactly one of outline and plan
            _with(frame, ("plan",), {}),
            _with(frame, ("plan", "document_id"), draw(st.sampled_from(["", "p" * 129, 7]))),
            _with(frame, ("plan", "unknown"), 1),
        ]
    if kind == "generate" and "outline" in frame:
        first = ("outline", "sections", 0)
        breakers += [
            _without(frame, "outline"),
            {**frame, "plan": {"document_id": "doc"}},
            _with(frame, ("options",), {"temperature": 0.2}),
            _with(frame, ("outline", "sections"), []),
            _with(
                frame, ("outline", "sections"), [{"id": "s", "title": "t", "target_tokens": 1}] * 65
            ),
            _with(frame, ("outline", "title"), ""),
            _with(frame, ("outline", "document_id"), "d" * 129),
            _with(frame, (*first, "target_tokens"), draw(st.sampled_from([0, -1, 4097, 10**6]))),
            _with(frame, (*first, "target_tokens"), draw(st.sampled_from(["600", 12.5, None]))),
            _with(frame, (*first, "id"), draw(st.sampled_from(["", "a b", "x\n", "é", "i" * 65]))),
            _with(frame, (*first, "brief"), "b" * 4001),
            _with(frame, (*first, "unknown"), 1),
        ]
    return draw(st.sampled_from(breakers))


SMALL_OUTLINE = {
    "document_id": "d",
    "title": "t",
    "sections": [{"id": "s", "title": "t", "target_tokens": 1}],
}


@dataclass(frozen=True)
class Bad:
    """An invalid message: the text to send (None: a binary message) and the expected code."""

    text: str | None
    code: str
    request_id: str | None = None


def _bad_frame(frame: Any, code: str) -> Bad:
    """Only a valid `request_id` (a string of at most 128 characters) is echoed."""
    request_id = frame.get("request_id") if isinstance(frame, dict) else None
    if not isinstance(request_id, str) or len(request_id) > 128:
        request_id = None
    return Bad(json.dumps(frame), code, request_id)


bad_messages = st.one_of(
    st.text(max_size=60).filter(_not_json).map(lambda text: Bad(text, "invalid_json")),
    st.integers(10_000, 120_000).map(lambda n: Bad("[" * n + "]" * n, "invalid_json")),
    st.sampled_from(['"\\ud800"', '"\\udfff"', '"a\\udc00b"']).map(
        lambda bad: Bad('{"type": "ping", "request_id": ' + bad + "}", "invalid_json")
    ),
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: Bad(json.dumps(v), "invalid_frame")
    ),
    st.dictionaries(
        st.text(max_size=10).filter(lambda k: k != "type"), json_values, max_size=4
    ).map(lambda frame: _bad_frame(frame, "unknown_type")),
    st.tuples(valid_frames, json_values.filter(lambda t: t not in CLIENT_TYPES)).map(
        lambda pair: _bad_frame({**pair[0], "type": pair[1]}, "unknown_type")
    ),
    schema_violations().map(lambda frame: _bad_frame(frame, "invalid_frame")),
    st.just(Bad(None, "binary_not_supported")),
)


# --- the exchanges ----------------------------------------------------------------------------


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_BUT_TAB_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _outline_is_refused(outline: dict[str, Any]) -> bool:
    """What the generator refuses although the schema allows it (docs/protocol.md,
    `invalid_outline`): a title that is only whitespace, duplicate section ids, control
    characters (tab and newline are allowed in a brief)."""
    sections = outline["sections"]
    ids = [s["id"] for s in sections]
    single_line = [outline["document_id"], outline["title"], *ids, *(s["title"] for s in sections)]
    return (
        not outline["title"].strip()
        or any(not s["title"].strip() for s in sections)
        or len(set(ids)) != len(ids)
        or any(CONTROL.search(text) for text in single_line)
        or any(CONTROL_BUT_TAB_NEWLINE.search(s.get("brief", "")) for s in sections)
    )


def _is_answer(answer: dict[str, Any], kind: str, request_id: Any) -> None:
    """A frame that answers a command (revision 2): no `seq`, always `ts`, and the command's
    `request_id` when it had one (a string), absent otherwise: never null."""
    assert answer["type"] == kind and "seq" not in answer, answer
    assert isinstance(answer["ts"], int), answer
    if isinstance(request_id, str):
        assert answer["request_id"] == request_id, answer
    else:
        assert "request_id" not in answer, answer


def _is_error(answer: dict[str, Any], code: str, request_id: Any) -> None:
    _is_answer(answer, "error", request_id)
    assert (answer["code"], answer["retryable"]) == (code, False), answer


async def _answer_valid(live: Live, frame: dict[str, Any]) -> str:
    assert VALIDATOR.validate_client(frame) is None, "the strategy generated an invalid frame"
    request_id = frame.get("request_id")
    await live.fuzz.send(frame)
    answer = await live.fuzz.recv()
    kind = frame["type"]
    if kind == "ping":
        _is_answer(answer, "pong", request_id)
        assert set(answer) <= {"v", "type", "ts", "request_id"}, answer
    elif kind in ("resume", "cancel"):
        # Random run ids: never one of this user's runs.
        _is_error(answer, "run_not_found", request_id)
        assert answer["run_id"] == frame["run_id"]
    elif kind == "refresh":
        # Whatever the schema allows as `token` is not a JWT this server signed.
        _is_error(answer, "invalid_token", request_id)
    elif kind == "runs":
        _is_answer(answer, "ack", request_id)
        assert answer["command"] == "runs"
        # This user's runs, oldest first; the other user's run is not among them.
        assert [run["run_id"] for run in answer["runs"]] == list(live.fuzz_runs), answer
        assert {run["status"] for run in answer["runs"]} <= {"completed"}, answer
    elif request_id and request_id in live.run_by_request:
        # Idempotent generate: whatever the frame says, the run that request id started is
        # replayed from seq 1, exactly as the first time, and no run is started.
        kind = "generate replayed"
        run_id = live.run_by_request[request_id]
        frames = [answer, *await live.fuzz.run_to_end()]
        assert frames == live.fuzz_runs[run_id]
    elif "plan" in frame:
        kind = "generate by plan"
        # The stack has no planner (DOCGEN_PLANNER_URL unset).
        _is_error(answer, "planner_not_configured", request_id)
    elif _outline_is_refused(frame["outline"]):
        kind = "generate refused"
        _is_error(answer, "invalid_outline", request_id)
    else:
        kind = "generate run"
        assert answer["type"] == "run_started", answer
        assert answer["request_id"] == (request_id or None)  # "" comes back as null
        assert answer["sections"] == [s["id"] for s in frame["outline"]["sections"]]
        frames = [answer, *await live.fuzz.run_to_end()]
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        assert {f["run_id"] for f in frames} == {answer["run_id"]}
        assert frames[-1]["status"] == "completed"
        texts = sections_text(frames)
        for end in (f for f in frames if f["type"] == "section_end"):
            assert (
                hashlib.sha256(texts[end["section_id"]].encode()).hexdigest() == end["text_sha256"]
            )
        live.fuzz_runs[answer["run_id"]] = frames
        if request_id:
            live.run_by_request[request_id] = answer["run_id"]
    await _probe(live)
    return kind


async def _answer_invalid(live: Live, bad: Bad) -> str:
    if bad.text is None:
        await live.fuzz.ws.send_bytes(b"\x00binary")
    else:
        await live.fuzz.ws.send_str(bad.text)
    answer = await live.fuzz.recv()
    _is_error(answer, bad.code, bad.request_id)
    await _probe(live)
    return bad.code


@SETTINGS
@given(frame=valid_frames)
def test_valid_frames_get_their_documented_answer(live: Live, frame: dict[str, Any]) -> None:
    event(live.run(_answer_valid(live, frame)))


@settings(SETTINGS, max_examples=200)
@given(bad=bad_messages)
def test_invalid_messages_get_the_documented_error_and_the_socket_stays_usable(
    live: Live, bad: Bad
) -> None:
    event(live.run(_answer_invalid(live, bad)))


def test_another_users_run_meanwhile_completes_whole(live: Live) -> None:
    frames = live.bystander_frames + live.run(asyncio.wait_for(live.bystander_run, 60))
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["status"] == "completed"
    assert frames[-1]["totals"]["sections_completed"] == len(BYSTANDER["sections"])
    texts = sections_text(frames)
    ends = [f for f in frames if f["type"] == "section_end"]
    assert len(ends) == len(BYSTANDER["sections"])
    for end in ends:
        assert texts[end["section_id"]] == BYSTANDER_TEXT
        assert hashlib.sha256(texts[end["section_id"]].encode()).hexdigest() == end["text_sha256"]
