"""Property-based conformance of the edge: client frames generated from the JSON Schemas
(hypothesis-jsonschema), valid and deliberately broken, thrown at one live stack over one
socket. Valid frames get their documented answer, invalid ones the documented error code,
the socket stays usable after every frame, and another user's run on another socket
completes whole."""

from __future__ import annotations

import asyncio
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
CLIENT_TYPES = ("generate", "resume", "cancel", "ping")
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
    bystander_frames: list[dict[str, Any]] = field(default_factory=list)
    probes: Iterator[int] = field(default_factory=itertools.count)

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


async def _start() -> tuple[Stack, ProtocolClient, ProtocolClient, list[dict[str, Any]]]:
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
    fuzz = await stack.connect(stack.token("alice"))
    return stack, fuzz, bystander, [first]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with asyncio.Runner() as runner:
        stack, fuzz, bystander, frames = runner.run(_start())
        try:
            yield Live(runner, stack, fuzz, bystander, frames)
        finally:
            runner.run(stack.close())


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
    if kind == "generate":
        first = ("outline", "sections", 0)
        breakers += [
            _without(frame, "outline"),
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


@dataclass(frozen=True)
class Bad:
    """An invalid message: the text to send (None: a binary message) and the expected code."""

    text: str | None
    code: str
    request_id: str | None = None


def _bad_frame(frame: Any, code: str) -> Bad:
    request_id = frame.get("request_id") if isinstance(frame, dict) else None
    return Bad(json.dumps(frame), code, request_id if isinstance(request_id, str) else None)


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


async def _answer_valid(live: Live, frame: dict[str, Any]) -> str:
    assert VALIDATOR.validate_client(frame) is None, "the strategy generated an invalid frame"
    request_id = frame.get("request_id")
    await live.fuzz.send(frame)
    answer = await live.fuzz.recv()
    kind = frame["type"]
    if kind == "ping":
        expected = {"v": 1, "type": "pong", "ts": answer["ts"]}
        if request_id is not None:
            expected["request_id"] = request_id
        assert answer == expected
    elif kind in ("resume", "cancel"):
        assert answer["type"] == "error" and "seq" not in answer
        assert (answer["code"], answer["retryable"]) == ("run_not_found", False)
        assert answer["run_id"] == frame["run_id"]
        assert answer.get("request_id") == request_id
    elif _outline_is_refused(frame["outline"]):
        kind = "generate refused"
        assert answer["type"] == "error" and "seq" not in answer, answer
        assert (answer["code"], answer["retryable"]) == ("invalid_outline", False)
        assert answer.get("request_id") == request_id
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
    await _probe(live)
    return kind


async def _answer_invalid(live: Live, bad: Bad) -> str:
    if bad.text is None:
        await live.fuzz.ws.send_bytes(b"\x00binary")
    else:
        await live.fuzz.ws.send_str(bad.text)
    answer = await live.fuzz.recv()
    assert answer["type"] == "error" and "seq" not in answer, answer
    assert (answer["code"], answer["retryable"]) == (bad.code, False), (bad, answer)
    assert answer.get("request_id") == bad.request_id
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
    frames = live.bystander_frames + live.run(live.bystander.run_to_end(timeout=60))
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["status"] == "completed"
    assert frames[-1]["totals"]["sections_completed"] == len(BYSTANDER["sections"])
    texts = sections_text(frames)
    ends = [f for f in frames if f["type"] == "section_end"]
    assert len(ends) == len(BYSTANDER["sections"])
    for end in ends:
        assert texts[end["section_id"]] == BYSTANDER_TEXT
        assert hashlib.sha256(texts[end["section_id"]].encode()).hexdigest() == end["text_sha256"]
