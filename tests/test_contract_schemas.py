"""The machine-readable WebSocket contract: schemas/*.json and docs/asyncapi.yaml.

Checks the AsyncAPI document with the official parser (Node, tests/asyncapi/), the JSON
Schemas with jsonschema, that the two never drift apart, and the edge's FrameValidator.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import referencing.exceptions
import yaml
from jsonschema import Draft7Validator, ValidationError
from referencing import Registry, Resource

from services.edge.schemas import FrameValidator
from tests.support.node import ensure_npm_packages

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
NODE_DIR = ROOT / "tests" / "asyncapi"
BASE_ID = "https://docgen.example/schemas/"
DRAFT7 = "http://json-schema.org/draft-07/schema#"

CLIENT_TYPES = ["generate", "resume", "cancel", "ping", "refresh", "runs"]
SERVER_TYPES = [
    "run_started",
    "section_start",
    "section_chunk",
    "section_end",
    "summary_update",
    "run_end",
    "error",
    "pong",
    "session",
    "ack",
]
# Stable: clients switch on these. Removing or renaming one is a breaking change.
FRAME_ERROR_CODES = {
    "invalid_json",
    "invalid_frame",
    "unknown_type",
    "binary_not_supported",
    "invalid_outline",
    "run_not_found",
    "cursor_out_of_range",
    "too_many_runs",
    "rate_limited",
    "generator_unavailable",
    "internal",
    "invalid_token",
    "token_expired",
    "token_not_yet_valid",
    "token_user_mismatch",
    "auth_unavailable",
    "plan_not_found",
    "plan_forbidden",
    "planner_unavailable",
    "planner_not_configured",
}
RUN_ERROR_CODES = {
    "llm_unavailable",
    "llm_rejected",
    "llm_stream_failed",
    "summary_unavailable",
    "summary_refinement_skipped",
    "internal",
}
ENVELOPE = ["v", "type", "run_id", "seq", "ts"]

SCHEMA_FILES = sorted(p.relative_to(SCHEMAS).as_posix() for p in SCHEMAS.rglob("*.json"))
CLIENT_FILES = [f"client/{t}.json" for t in CLIENT_TYPES]
SERVER_FILES = [f"server/{t}.json" for t in SERVER_TYPES]
FRAME_FILES = CLIENT_FILES + SERVER_FILES
UNION_FILES = ["client-frame.json", "server-frame.json"]


def load(rel: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / rel).read_text(encoding="utf-8"))
    return schema


def example(rel: str) -> dict[str, Any]:
    return copy.deepcopy(load(rel)["examples"][0])


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry().with_resources(
        (load(rel)["$id"], Resource.from_contents(load(rel))) for rel in SCHEMA_FILES
    )


def validator_for(rel: str, registry: Registry) -> Draft7Validator:
    return Draft7Validator(load(rel), registry=registry)


# --- (a) the official AsyncAPI parser ------------------------------------------------------


@pytest.fixture(scope="session")
def node_validator() -> list[str]:
    """The command that validates an AsyncAPI file; installs the parser with `npm ci` if needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are required to validate docs/asyncapi.yaml with @asyncapi/parser "
            "(install Node.js >= 20, e.g. `apt-get install nodejs npm`)",
            pytrace=False,
        )
    ensure_npm_packages(NODE_DIR, npm)
    return [node, str(NODE_DIR / "validate.mjs")]


def run_node(command: list[str], document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, str(document)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.timeout(600)
def test_asyncapi_document_is_valid(node_validator: list[str]) -> None:
    result = run_node(node_validator, ASYNCAPI)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "16 messages, 2 operations" in result.stdout


@pytest.fixture
def contract_copy(tmp_path: Path) -> Path:
    """docs/ and schemas/ copied side by side, to break on purpose."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.md"))
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    return tmp_path


@pytest.mark.timeout(600)
def test_asyncapi_validator_follows_file_refs(
    node_validator: list[str], contract_copy: Path
) -> None:
    # A missing file and an invalid draft-07 keyword both surface as errors, which proves the
    # parser really opens ../schemas/*.json rather than passing the $ref through.
    document = contract_copy / "docs" / "asyncapi.yaml"
    document.write_text(
        document.read_text().replace("../schemas/client/cancel.json", "../schemas/client/gone.json")
    )
    pong = contract_copy / "schemas" / "server" / "pong.json"
    pong.write_text(pong.read_text().replace('"type": "integer"', '"type": "int"'))

    result = run_node(node_validator, document)

    assert result.returncode == 1, f"{result.stdout}\n{result.stderr}"
    assert "gone.json" in result.stderr
    assert "pong.json" in result.stderr


# --- (b) every schema file is draft-07 and its examples validate ---------------------------


def test_schema_files_are_the_expected_set() -> None:
    assert sorted(SCHEMA_FILES) == sorted(FRAME_FILES + UNION_FILES)


@pytest.mark.parametrize("rel", SCHEMA_FILES)
def test_schema_is_draft7_with_id_and_examples(rel: str, registry: Registry) -> None:
    schema = load(rel)
    Draft7Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT7
    assert schema["$id"] == BASE_ID + rel
    assert schema["examples"], f"{rel} has no example"
    for instance in schema["examples"]:
        validator_for(rel, registry).validate(instance)


def object_schemas(node: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((where or "/", node))
        for key, value in node.items():
            if key not in ("examples", "enum", "const"):
                found += object_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += object_schemas(value, f"{where}/{i}")
    return found


@pytest.mark.parametrize("rel", FRAME_FILES)
def test_every_object_forbids_additional_properties(rel: str) -> None:
    # The union files are exempt: their `properties` only pick the `type` to dispatch on.
    for where, node in object_schemas(load(rel)):
        assert node.get("additionalProperties") is False, f"{rel}{where}"


@pytest.mark.parametrize(
    ("union", "folder", "types"),
    [("client-frame.json", "client", CLIENT_TYPES), ("server-frame.json", "server", SERVER_TYPES)],
)
def test_union_dispatches_to_every_frame_file(union: str, folder: str, types: list[str]) -> None:
    schema = load(union)
    assert schema["properties"]["type"]["enum"] == types
    branches = {
        branch["if"]["properties"]["type"]["const"]: branch["then"]["$ref"]
        for branch in schema["allOf"]
    }
    assert branches == {t: f"{folder}/{t}.json" for t in types}
    for branch in schema["allOf"]:
        # without `required`, a frame with no `type` would vacuously satisfy every `if`
        assert branch["if"]["required"] == ["type"]


@pytest.mark.parametrize("rel", FRAME_FILES)
def test_frame_file_type_const_is_its_name(rel: str) -> None:
    schema = load(rel)
    shapes = schema["definitions"].values() if "oneOf" in schema else [schema]
    for shape in shapes:
        assert shape["properties"]["type"]["const"] == Path(rel).stem
        assert "type" in shape["required"]


def run_event_shapes() -> list[tuple[str, dict[str, Any]]]:
    shapes = [(f"server/{t}.json", load(f"server/{t}.json")) for t in SERVER_TYPES]
    run_error = load("server/error.json")["definitions"]["run_error"]
    shapes.append(("server/error.json#run_error", run_error))
    return [(name, s) for name, s in shapes if "seq" in s.get("properties", {})]


def test_run_event_envelopes_agree() -> None:
    shapes = run_event_shapes()
    assert len(shapes) == 7  # six run events and the run-shaped error
    _, first = shapes[0]
    for name, shape in shapes:
        assert shape["required"][:5] == ENVELOPE, name
        for field in ("v", "run_id", "seq", "ts"):
            assert shape["properties"][field] == first["properties"][field], f"{name}: {field}"


def test_error_codes_are_the_stable_lists() -> None:
    definitions = load("server/error.json")["definitions"]
    assert set(definitions["frame_error"]["properties"]["code"]["enum"]) == FRAME_ERROR_CODES
    assert set(definitions["run_error"]["properties"]["code"]["enum"]) == RUN_ERROR_CODES


# --- (c) asyncapi.yaml and schemas/ never drift apart ---------------------------------------


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return document


def test_asyncapi_messages_reference_every_frame_file_and_nothing_else(
    asyncapi: dict[str, Any],
) -> None:
    referenced: dict[str, str] = {}
    for name, message in asyncapi["components"]["messages"].items():
        payload = message["payload"]
        assert payload["schemaFormat"] == "application/schema+json;version=draft-07", name
        target = (ASYNCAPI.parent / payload["schema"]["$ref"]).resolve()
        assert target.is_file(), f"message {name} references missing {target}"
        referenced[name] = target.relative_to(SCHEMAS).as_posix()
        assert message["name"] == name
    assert sorted(referenced.values()) == sorted(FRAME_FILES)
    assert all(Path(rel).stem == name for name, rel in referenced.items())


def test_asyncapi_channel_and_operations_carry_every_message(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["servers"]["local"]["host"] == "127.0.0.1:8080"
    assert asyncapi["servers"]["local"]["protocol"] == "ws"
    channel = asyncapi["channels"]["sections"]
    assert channel["address"] == "/v1/ws"
    assert set(channel["messages"]) == set(CLIENT_TYPES + SERVER_TYPES)

    def names(operation: dict[str, Any]) -> list[str]:
        return [ref["$ref"].rsplit("/", 1)[1] for ref in operation["messages"]]

    by_action = {op["action"]: names(op) for op in asyncapi["operations"].values()}
    assert by_action == {"receive": CLIENT_TYPES, "send": SERVER_TYPES}


def test_asyncapi_documents_the_close_codes_and_handshake(asyncapi: dict[str, Any]) -> None:
    description = asyncapi["channels"]["sections"]["description"]
    for code in ("4000", "4001", "4500", "4501", "1009"):
        assert f"| {code} |" in description
    schemes = asyncapi["components"]["securitySchemes"]
    assert schemes["bearerJwt"] == {**schemes["bearerJwt"], "type": "http", "scheme": "bearer"}
    assert "bearer.<JWT>" in schemes["subprotocolJwt"]["description"]
    assert "docgen.v1" in schemes["subprotocolJwt"]["description"]


# --- (d) hand-written invalid frames are rejected ------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def set_path(path: str, value: Any) -> Mutation:
    def mutate(frame: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = frame
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def drop(path: str) -> Mutation:
    def mutate(frame: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = frame
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return mutate


def sections(count: int) -> Mutation:
    return set_path(
        "outline.sections",
        [{"id": f"s{i}", "title": f"Section {i}", "target_tokens": 100} for i in range(count)],
    )


GEN, RESUME, CANCEL, PING, REFRESH, RUNS = (f"client/{t}.json" for t in CLIENT_TYPES)
STARTED, START, CHUNK, END, SUMMARY, RUN_END, ERROR, PONG, SESSION, ACK = (
    f"server/{t}.json" for t in SERVER_TYPES
)
S0 = "outline.sections.0."  # the first section of the outline

INVALID: list[tuple[str, str, Mutation]] = [
    # client frames
    (GEN, "no outline", drop("outline")),
    (GEN, "outline without title", drop("outline.title")),
    (GEN, "outline without sections", drop("outline.sections")),
    (GEN, "no sections", sections(0)),
    (GEN, "65 sections", sections(65)),
    (GEN, "target_tokens 0", set_path(S0 + "target_tokens", 0)),
    (GEN, "target_tokens 4097", set_path(S0 + "target_tokens", 4097)),
    (GEN, "target_tokens string", set_path(S0 + "target_tokens", "600")),
    (GEN, "target_tokens fractional", set_path(S0 + "target_tokens", 1.5)),
    (GEN, "section without target_tokens", drop(S0 + "target_tokens")),
    (GEN, "section id with space", set_path(S0 + "id", "the intro")),
    (GEN, "section id empty", set_path(S0 + "id", "")),
    (GEN, "section id 65 chars", set_path(S0 + "id", "x" * 65)),
    (GEN, "section id non-ascii", set_path(S0 + "id", "introducción")),
    (GEN, "section id slash", set_path(S0 + "id", "a/b")),
    (GEN, "section title empty", set_path(S0 + "title", "")),
    (GEN, "brief too long", set_path(S0 + "brief", "b" * 4001)),
    (GEN, "title too long", set_path("outline.title", "t" * 301)),
    (GEN, "document_id too long", set_path("outline.document_id", "d" * 129)),
    (GEN, "extra field", set_path("priority", "high")),
    (GEN, "extra outline field", set_path("outline.tone", "dry")),
    (GEN, "extra section field", set_path(S0 + "tone", "dry")),
    (GEN, "unknown option", set_path("options", {"temperature": 0.2})),
    (GEN, "options not an object", set_path("options", [])),
    (GEN, "version 2", set_path("v", 2)),
    (GEN, "request_id too long", set_path("request_id", "r" * 129)),
    (GEN, "request_id a number", set_path("request_id", 7)),
    (RESUME, "no after_seq", drop("after_seq")),
    (RESUME, "negative after_seq", set_path("after_seq", -1)),
    (RESUME, "after_seq string", set_path("after_seq", "117")),
    (RESUME, "after_seq boolean", set_path("after_seq", True)),
    (RESUME, "empty run_id", set_path("run_id", "")),
    (RESUME, "run_id too long", set_path("run_id", "r" * 129)),
    (CANCEL, "no run_id", drop("run_id")),
    (CANCEL, "run_id a number", set_path("run_id", 12)),
    (PING, "extra field", set_path("payload", "x")),
    (PING, "wrong type const", set_path("type", "pong")),
    (REFRESH, "no token", drop("token")),
    (REFRESH, "empty token", set_path("token", "")),
    (REFRESH, "token a number", set_path("token", 7)),
    (RUNS, "extra field", set_path("user", "bob")),
    # server frames
    (STARTED, "no seq", drop("seq")),
    (STARTED, "seq 0", set_path("seq", 0)),
    (STARTED, "ts a string", set_path("ts", "2024-11-25T21:00:00Z")),
    (STARTED, "request_id missing", drop("request_id")),
    (STARTED, "no sections", set_path("sections", [])),
    (STARTED, "duplicate sections", set_path("sections", ["a", "a"])),
    (START, "target_tokens 0", set_path("target_tokens", 0)),
    (START, "target_tokens 4097", set_path("target_tokens", 4097)),
    (START, "attempt 0", set_path("attempt", 0)),
    (START, "negative index", set_path("index", -1)),
    (CHUNK, "empty delta", set_path("delta", "")),
    (CHUNK, "no run_id", drop("run_id")),
    (END, "unknown finish_reason", set_path("finish_reason", "done")),
    (END, "uppercase sha", set_path("text_sha256", "9F86D081" * 8)),
    (END, "short sha", set_path("text_sha256", "9f86d081" * 7)),
    (END, "extra usage field", set_path("usage", {"output_tokens": 1, "input_tokens": 2})),
    (END, "negative chars", set_path("chars", -1)),
    (SUMMARY, "unknown method", set_path("method", "abstractive")),
    (SUMMARY, "version 0", set_path("version", 0)),
    (RUN_END, "unknown status", set_path("status", "done")),
    (RUN_END, "totals incomplete", drop("totals.output_tokens")),
    (RUN_END, "version 2", set_path("v", 2)),
    (PONG, "pong with seq", set_path("seq", 3)),
    (PONG, "pong without ts", drop("ts")),
    (PONG, "request_id null", set_path("request_id", None)),
    (SESSION, "with seq", set_path("seq", 1)),
    (SESSION, "no token_expires_at", drop("token_expires_at")),
    (SESSION, "no limits", drop("limits")),
    (SESSION, "unknown limit", set_path("limits.max_cats", 3)),
    (SESSION, "no server version", drop("server.version")),
    (ACK, "unknown command", set_path("command", "generate")),
    (ACK, "with seq", set_path("seq", 1)),
    (ACK, "resume ack without last_seq", drop("last_seq")),
    (ACK, "unknown status", set_path("status", "paused")),
    (ACK, "request_id null", set_path("request_id", None)),
    (ACK, "no ts", drop("ts")),
    (ERROR, "unknown code", set_path("code", "oops")),
    (ERROR, "frame error with seq", set_path("seq", 5)),
    (ERROR, "frame error with a run code", set_path("code", "llm_unavailable")),
    (ERROR, "retryable a string", set_path("retryable", "no")),
    (ERROR, "section_id on a frame error", set_path("section_id", "intro")),
    (ERROR, "frame error without ts", drop("ts")),
    (ERROR, "frame error request_id null", set_path("request_id", None)),
]


@pytest.mark.parametrize(
    ("rel", "mutate"),
    [pytest.param(rel, mutate, id=f"{Path(rel).stem}: {name}") for rel, name, mutate in INVALID],
)
def test_invalid_frame_is_rejected(rel: str, mutate: Mutation, registry: Registry) -> None:
    frame = example(rel)
    mutate(frame)
    union = "client-frame.json" if rel.startswith("client/") else "server-frame.json"
    assert not validator_for(rel, registry).is_valid(frame)
    assert not validator_for(union, registry).is_valid(frame)


RUN_ERROR = {
    "v": 1,
    "type": "error",
    "run_id": "run_1",
    "seq": 57,
    "ts": 1732568400123,
    "code": "llm_stream_failed",
    "message": "The model stopped answering; retrying the section.",
    "retryable": True,
    "section_id": "setup",
}


def test_error_shapes_are_exclusive(registry: Registry) -> None:
    errors = validator_for("server/error.json", registry)
    errors.validate(RUN_ERROR)
    assert not errors.is_valid({k: v for k, v in RUN_ERROR.items() if k != "seq"})
    assert not errors.is_valid({k: v for k, v in RUN_ERROR.items() if k != "ts"})
    minimal = {"v": 1, "type": "error", "code": "invalid_json", "message": "m", "retryable": False}
    assert not errors.is_valid(minimal)  # ts is required on every frame
    minimal["ts"] = 1
    errors.validate({**minimal, "request_id": "r-1", "run_id": "run_1"})
    # request_id is absent when the frame had none; never null. Run errors never carry one.
    assert not errors.is_valid({**minimal, "request_id": None})
    assert not errors.is_valid({**RUN_ERROR, "request_id": "r-1"})
    # A frame-error code with a seq fits neither shape.
    assert not errors.is_valid({**minimal, "run_id": "run_1", "seq": 1})


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "bogus"},
        {"type": "run_started"},
        {"type": 5},
        {"request_id": "r1"},
        {},
        [],
        "ping",
    ],
    ids=repr,
)
def test_client_union_rejects_unknown_or_missing_type_at_type(
    frame: Any, registry: Registry
) -> None:
    errors = list(validator_for("client-frame.json", registry).iter_errors(frame))
    assert errors
    # The edge tells `unknown_type` from `invalid_frame` by where the error is.
    assert any(list(e.path) in ([], ["type"]) for e in errors)


def test_unions_accept_every_frame_example(registry: Registry) -> None:
    for rel in FRAME_FILES:
        union = "client-frame.json" if rel.startswith("client/") else "server-frame.json"
        validator_for(union, registry).validate(example(rel))


def test_client_frames_need_only_type_and_their_fields(registry: Registry) -> None:
    minimal = {
        "generate": {
            "type": "generate",
            "outline": {
                "document_id": "d",
                "title": "T",
                "sections": [{"id": "a", "title": "A", "target_tokens": 1}],
            },
        },
        "resume": {"type": "resume", "run_id": "r", "after_seq": 0},
        "cancel": {"type": "cancel", "run_id": "r"},
        "ping": {"type": "ping"},
        "refresh": {"type": "refresh", "token": "t"},
        "runs": {"type": "runs"},
    }
    for kind, frame in minimal.items():
        validator_for(f"client/{kind}.json", registry).validate(frame)
    big = minimal["generate"]
    big["outline"]["sections"] = [  # type: ignore[index]
        {"id": f"s.{i}:x-y_{i}", "title": "t" * 300, "brief": "b" * 4000, "target_tokens": 4096}
        for i in range(64)
    ]
    validator_for("client/generate.json", registry).validate(big)


# --- FrameValidator (services/edge/schemas.py) ---------------------------------------------


@pytest.fixture(scope="module")
def frames() -> FrameValidator:
    return FrameValidator()


def test_frame_validator_knows_the_types(frames: FrameValidator) -> None:
    assert frames.client_types == tuple(CLIENT_TYPES)
    assert frames.server_types == tuple(SERVER_TYPES)


@pytest.mark.parametrize("kind", CLIENT_TYPES)
def test_valid_client_frames_pass(frames: FrameValidator, kind: str) -> None:
    assert frames.validate_client(example(f"client/{kind}.json")) is None


@pytest.mark.parametrize(
    "frame",
    [{}, {"request_id": "r1"}, {"type": "bogus"}, {"type": "pong"}, {"type": None}, {"type": 3}],
    ids=repr,
)
def test_missing_or_unknown_type_is_unknown_type(frames: FrameValidator, frame: Any) -> None:
    problem = frames.validate_client(frame)
    assert problem is not None
    assert problem[0] == "unknown_type"


@pytest.mark.parametrize("frame", [[], "ping", 3, None], ids=repr)
def test_non_object_is_invalid_frame(frames: FrameValidator, frame: Any) -> None:
    assert frames.validate_client(frame) == ("invalid_frame", "a frame must be a JSON object")


@pytest.mark.parametrize(
    ("rel", "mutate"),
    [
        pytest.param(rel, mutate, id=f"{Path(rel).stem}: {name}")
        for rel, name, mutate in INVALID
        if rel.startswith("client/") and name != "wrong type const"
    ],
)
def test_invalid_client_frame_is_invalid_frame(
    frames: FrameValidator, rel: str, mutate: Mutation
) -> None:
    frame = example(rel)
    mutate(frame)
    problem = frames.validate_client(frame)
    assert problem is not None
    code, message = problem
    assert code == "invalid_frame"
    assert message.startswith("$")
    assert len(message) <= 300


def test_invalid_frame_message_names_the_path(frames: FrameValidator) -> None:
    frame = example("client/generate.json")
    frame["outline"]["sections"][1]["target_tokens"] = 0
    assert frames.validate_client(frame) == (
        "invalid_frame",
        "$.outline.sections[1].target_tokens: 0 is less than the minimum of 1",
    )


def test_long_values_are_not_echoed_back(frames: FrameValidator) -> None:
    problem = frames.validate_client({"type": "ping", "request_id": "x" * 100_000})
    assert problem == ("invalid_frame", "$.request_id: fails maxLength 128")


@pytest.mark.parametrize("section_id", ["intro\n", "\nintro", "in\ntro"], ids=repr)
def test_patterns_use_ecma_end_of_input(frames: FrameValidator, section_id: str) -> None:
    # Python's `$` also matches before a final newline; JSON Schema's (ECMA-262) does not.
    frame = example("client/generate.json")
    frame["outline"]["sections"][0]["id"] = section_id
    problem = frames.validate_client(frame)
    assert problem is not None
    assert problem[0] == "invalid_frame"


@pytest.mark.parametrize("kind", SERVER_TYPES)
def test_valid_server_frames_pass(frames: FrameValidator, kind: str) -> None:
    frames.validate_server(example(f"server/{kind}.json"))


@pytest.mark.parametrize(
    ("rel", "mutate"),
    [
        pytest.param(rel, mutate, id=f"{Path(rel).stem}: {name}")
        for rel, name, mutate in INVALID
        if rel.startswith("server/")
    ],
)
def test_invalid_server_frame_raises(frames: FrameValidator, rel: str, mutate: Mutation) -> None:
    frame = example(rel)
    mutate(frame)
    with pytest.raises(ValidationError):
        frames.validate_server(frame)


@pytest.mark.parametrize("frame", [{"type": "ping"}, {"v": 1}, [], "pong"], ids=repr)
def test_server_frame_of_unknown_type_raises(frames: FrameValidator, frame: Any) -> None:
    with pytest.raises(ValidationError):
        frames.validate_server(frame)


def test_server_sha_pattern_is_ecma_too(frames: FrameValidator) -> None:
    frame = example("server/section_end.json")
    frame["text_sha256"] += "\n"
    with pytest.raises(ValidationError):
        frames.validate_server(frame)


def test_frame_validator_never_fetches_remote_refs(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    ping = tmp_path / "schemas" / "client" / "ping.json"
    schema = json.loads(ping.read_text())
    schema["properties"]["request_id"] = {"$ref": "https://docgen.example/schemas/elsewhere.json"}
    ping.write_text(json.dumps(schema))

    validator = FrameValidator(tmp_path / "schemas")

    with pytest.raises(referencing.exceptions.Unresolvable):
        validator.validate_client({"type": "ping", "request_id": "r"})
