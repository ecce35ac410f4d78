"""The JSON frames of the public WebSocket protocol (docs/protocol.md), built from run
events and client frames. Plain data in, plain data out: no I/O."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
from docgen.v1 import events_pb2, outline_pb2

from services.common.outlines import outline_from_json

PROTOCOL_VERSION = 1

_FINISH_REASONS = {
    events_pb2.FINISH_REASON_STOP: "stop",
    events_pb2.FINISH_REASON_LENGTH: "length",
    events_pb2.FINISH_REASON_CANCELLED: "cancelled",
    events_pb2.FINISH_REASON_ERROR: "error",
    events_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}
_RUN_STATUSES = {
    events_pb2.RUN_STATUS_COMPLETED: "completed",
    events_pb2.RUN_STATUS_FAILED: "failed",
    events_pb2.RUN_STATUS_CANCELLED: "cancelled",
}
# In answers about a run (`ack`), not in `run_end`: a run still being written.
_CURRENT_STATUSES = {**_RUN_STATUSES, events_pb2.RUN_STATUS_RUNNING: "running"}
MAX_SAFE_INTEGER = 2**53 - 1
_PLAN_SOURCES = {
    events_pb2.PLAN_SOURCE_INLINE: "inline",
    events_pb2.PLAN_SOURCE_PLANNER: "planner",
}
_SUMMARY_METHODS = {
    events_pb2.SUMMARY_METHOD_EXTRACTIVE: "extractive",
    events_pb2.SUMMARY_METHOD_LLM: "llm",
}

# Handshake refusals a browser can read (revision 2). A browser sees neither the HTTP status
# nor the body of a refused upgrade, only a close code 1006; so a handshake with an `Origin`
# that fails one of these checks is upgraded and closed at once with the code below, the
# error code as its reason. 4000-4499: try again later; 4500-4999: not without a new token.
REFUSAL_CLOSE_CODES = {
    "too_many_connections": 4002,
    "auth_unavailable": 4003,
    "token_expired": 4500,
    "missing_token": 4502,
    "invalid_token": 4503,
    "token_not_yet_valid": 4504,
    "token_in_query_refused": 4505,
}

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(frame: dict[str, Any]) -> str:
    # orjson: about 3x cheaper than the stdlib encoder per frame, on the per-token path.
    return orjson.dumps(frame).decode()


def decode(text: str) -> Any:
    """The JSON value of a client text message. Raises `ValueError` when it is not JSON, is
    nested too deeply to parse, or holds a string that is not Unicode: an escaped lone
    surrogate such as "\\ud800" (forbidden by I-JSON, RFC 7493) could neither be echoed
    back nor put into a protobuf string."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if "\\u" in text:
        _dumps(value).encode()  # UnicodeEncodeError, a ValueError, on a lone surrogate
    return value


def event_to_frame(event: events_pb2.RunEvent) -> dict[str, Any]:
    """The protocol frame of one run event."""
    kind = event.WhichOneof("payload")
    frame: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": kind,
        "run_id": event.run_id,
        "seq": event.seq,
        "ts": event.ts_unix_ms,
    }
    if kind == "section_chunk":
        chunk = event.section_chunk
        frame.update(section_id=chunk.section_id, index=chunk.index, delta=chunk.delta)
    elif kind == "section_start":
        start = event.section_start
        frame.update(
            section_id=start.section_id,
            index=start.index,
            title=start.title,
            target_tokens=start.target_tokens,
            attempt=start.attempt,
        )
    elif kind == "section_end":
        end = event.section_end
        frame.update(
            section_id=end.section_id,
            index=end.index,
            finish_reason=_FINISH_REASONS[end.finish_reason],
            chars=end.chars,
            text_sha256=end.text_sha256,
            usage={"output_tokens": end.output_tokens},
            ttft_ms=end.ttft_ms,
            duration_ms=end.duration_ms,
        )
    elif kind == "summary_update":
        update = event.summary_update
        frame.update(
            version=update.version,
            through_section=update.through_section_id,
            summary=update.summary,
            method=_SUMMARY_METHODS[update.method],
            latency_ms=update.latency_ms,
        )
    elif kind == "run_started":
        started = event.run_started
        frame.update(
            document_id=started.document_id,
            request_id=started.request_id or None,
            sections=list(started.section_ids),
            # Runs logged before the field existed had inline outlines: nothing else existed.
            plan_source=_PLAN_SOURCES.get(started.plan_source, "inline"),
        )
        if started.title:  # runs logged before the field existed have none
            frame["title"] = started.title
        if started.language:  # runs logged before the field existed have none
            frame["language"] = started.language
    elif kind == "run_end":
        end_ = event.run_end
        frame.update(
            status=_RUN_STATUSES[end_.status],
            totals={
                "sections_completed": end_.sections_completed,
                "output_tokens": end_.output_tokens,
                "duration_ms": end_.duration_ms,
            },
        )
    elif kind == "error":
        error = event.error
        frame.update(code=error.code, message=error.message, retryable=error.retryable)
        if error.section_id:
            frame["section_id"] = error.section_id
    else:
        raise ValueError(f"run event {event.seq} has no known payload ({kind!r})")
    return frame


# The schemas' `maxLength` of a client's `request_id`: the answers' schemas allow no longer one.
MAX_REQUEST_ID_CHARS = 128


def echoable_request_id(frame: object) -> str | None:
    """The `request_id` an answer to `frame` may carry: only a valid one. A frame refused for
    its `request_id` (not a string, or too long) gets an answer without one, not an answer
    that breaks the answer's own schema."""
    request_id = frame.get("request_id") if isinstance(frame, dict) else None
    if isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID_CHARS:
        return request_id
    return None


def error_frame(
    code: str,
    message: str,
    *,
    retryable: bool,
    request_id: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """An error about a client frame: not part of any run's log, so it has no `seq`."""
    frame: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": "error",
        "code": code,
        "message": message,
        "retryable": retryable,
        "ts": time.time_ns() // 1_000_000,
    }
    if request_id is not None:
        frame["request_id"] = request_id
    if run_id is not None:
        frame["run_id"] = run_id
    return frame


def pong_frame(request_id: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": "pong",
        "ts": time.time_ns() // 1_000_000,
    }
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


def outline_from_frame(outline: dict[str, Any]) -> outline_pb2.Outline:
    """The outline of a schema-valid `generate` frame."""
    return outline_from_json(outline)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def session_frame(
    *,
    session_id: str,
    user: str,
    heartbeat_s: float,
    token_expires_at_s: float,
    limits: dict[str, int | float],
    version: str,
) -> dict[str, Any]:
    """The first frame on every socket (revision 2): no `seq`, not part of any run."""
    return {
        "v": PROTOCOL_VERSION,
        "type": "session",
        "ts": _now_ms(),
        "session_id": session_id,
        "user": user,
        "heartbeat_s": heartbeat_s,
        "token_expires_at": expiry_ms(token_expires_at_s),
        "limits": limits,
        "server": {"version": version},
    }


def expiry_ms(expires_at_s: float) -> int:
    """A token's `exp` in Unix ms, kept within what a JavaScript number holds exactly."""
    return min(int(expires_at_s * 1000), MAX_SAFE_INTEGER)


def status_name(status: int) -> str:
    """`running`, `completed`, `failed` or `cancelled`."""
    return _CURRENT_STATUSES[status]  # type: ignore[index]


def ack_frame(command: str, request_id: str | None, **result: Any) -> dict[str, Any]:
    """The one answer to `resume`, `cancel`, `refresh` or `runs`: no `seq`."""
    frame: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": "ack",
        "command": command,
        "ts": _now_ms(),
    }
    if request_id is not None:
        frame["request_id"] = request_id
    frame.update(result)
    return frame


def run_listing(info: events_pb2.RunInfo) -> dict[str, Any]:
    """One entry of `ack{command: "runs"}.runs`."""
    return {
        "run_id": info.run_id,
        "document_id": info.document_id,
        "status": status_name(info.status),
        "last_seq": info.last_seq,
        "started_at": info.started_at_unix_ms,
    }
