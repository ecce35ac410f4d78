"""WebSocket frame validation against the contract's JSON Schemas (`schemas/` at the repo root).

The schema files are the source of truth (`docs/asyncapi.yaml` names them); this module only
loads them, once, into draft-07 validators that never fetch anything over the network. They
are installed as the package `services.contract` (see pyproject.toml) and read through
importlib.resources, so an installed wheel needs no checkout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from jsonschema import Draft7Validator, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SCHEMAS_PACKAGE = "services.contract"

# Error messages echo parts of the client's frame; keep them short enough to show.
_MAX_MESSAGE_CHARS = 300


def _to_python_regex(pattern: str) -> str:
    """Translate an ECMA-262 `$` (end of input) into Python's `\\Z`.

    JSON Schema patterns are ECMA-262 regexes, where `$` matches only at the very end.
    Python's `$` also matches before a final newline, which would let "intro\\n" pass as a
    section id here while every JavaScript client rejects it.
    """
    out: list[str] = []
    in_class = False
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(char + next(chars, ""))
        elif char == "[" and not in_class:
            in_class = True
            out.append(char)
        elif char == "]" and in_class:
            in_class = False
            out.append(char)
        elif char == "$" and not in_class:
            out.append(r"\Z")
        else:
            out.append(char)
    return "".join(out)


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(_to_python_regex(pattern))


def _ecma_pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compile(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_ContractValidator = extend(Draft7Validator, validators={"pattern": _ecma_pattern})


def _json_files(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    """`(relative posix path, file)` for every *.json below `folder` (Traversable has no rglob)."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _json_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".json"):
            yield f"{prefix}{entry.name}", entry


def _load_registry(schemas_dir: Traversable) -> tuple[Registry, dict[str, dict[str, Any]]]:
    """Every schema file, registered under its `$id`; also returned by path relative to the dir."""
    by_path: dict[str, dict[str, Any]] = {}
    resources: list[tuple[str, Resource[Any]]] = []
    for rel, entry in _json_files(schemas_dir):
        contents = json.loads(entry.read_text(encoding="utf-8"))
        schema_id = contents.get("$id")
        if not isinstance(schema_id, str):
            raise RuntimeError(f"schema {rel} has no $id")
        by_path[rel] = contents
        resources.append((schema_id, DRAFT7.create_resource(contents)))
    # No `retrieve`: a $ref outside these files is an error, never a network fetch.
    return Registry().with_resources(resources), by_path


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


def _describe(error: ValidationError) -> str:
    """`<JSON path>: <problem>`, without quoting a long offending value back at the client."""
    described = f"{error.json_path}: {error.message}"
    if len(described) <= _MAX_MESSAGE_CHARS:
        return described
    return _short(f"{error.json_path}: fails {error.validator} {error.validator_value!r}")


class FrameValidator:
    """Checks client frames (for the edge's replies) and server frames (for drift in tests)."""

    def __init__(self, schemas_dir: Traversable | None = None) -> None:
        """`schemas_dir` defaults to the installed contract; tests pass a doctored copy."""
        registry, by_path = _load_registry(
            files(SCHEMAS_PACKAGE) if schemas_dir is None else schemas_dir
        )

        def validator(rel: str) -> Validator:
            return _ContractValidator(by_path[rel], registry=registry)

        self.client_types: tuple[str, ...] = tuple(
            by_path["client-frame.json"]["properties"]["type"]["enum"]
        )
        self.server_types: tuple[str, ...] = tuple(
            by_path["server-frame.json"]["properties"]["type"]["enum"]
        )
        self._client = {t: validator(f"client/{t}.json") for t in self.client_types}
        self._server = {t: validator(f"server/{t}.json") for t in self.server_types}
        self._server_frame = validator("server-frame.json")

    def validate_client(self, obj: object) -> tuple[str, str] | None:
        """None when `obj` is a valid client frame, else `(error_code, message)` for an error frame.

        `unknown_type` when `type` is missing or not a client frame type; `invalid_frame`
        (with the JSON path of the most relevant problem, per `best_match`) when the frame does
        not match its type.
        """
        if not isinstance(obj, dict):
            return "invalid_frame", "a frame must be a JSON object"
        if "type" not in obj:
            return "unknown_type", "the frame has no 'type'"
        frame_type = obj["type"]
        if not isinstance(frame_type, str) or frame_type not in self._client:
            shown = repr(frame_type)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            known = ", ".join(self.client_types)
            return "unknown_type", f"unknown frame type {shown}; expected one of {known}"
        error = best_match(self._client[frame_type].iter_errors(obj))
        if error is None:
            return None
        return "invalid_frame", _describe(error)

    def validate_server(self, obj: Any) -> None:
        """Raise `jsonschema.ValidationError` unless `obj` is a valid server frame."""
        frame_type = obj.get("type") if isinstance(obj, dict) else None
        validator = (
            self._server[frame_type]
            if isinstance(frame_type, str) and frame_type in self._server
            else self._server_frame  # reports the missing or unknown `type`
        )
        error = best_match(validator.iter_errors(obj))
        if error is not None:
            raise error
