"""The trace id of a request, minted at the edge and carried across every hop: gRPC metadata
between services, an HTTP header to the LLM, a field on every log line."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from services.common.logs import current_log_context

TRACE_METADATA_KEY = "x-docgen-trace-id"


def new_trace_id() -> str:
    """32 hex digits, the W3C trace-id format, so it can seed a `traceparent`."""
    return secrets.token_hex(16)


def current_trace_id() -> str | None:
    value = current_log_context().get("trace_id")
    return value if isinstance(value, str) else None


def trace_id_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == TRACE_METADATA_KEY and isinstance(value, str) and 8 <= len(value) <= 64:
            return value
    return None


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    trace_id = current_trace_id()
    return ((TRACE_METADATA_KEY, trace_id),) if trace_id else ()


def outgoing_headers() -> dict[str, str]:
    """Headers for the LLM request: our id, and a W3C traceparent built from it."""
    trace_id = current_trace_id()
    if not trace_id:
        return {}
    headers = {"X-Request-ID": trace_id}
    if len(trace_id) == 32:
        headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    return headers
