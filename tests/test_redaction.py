"""Credentials never reach a log line: the redaction of text, of log records (aiohttp's
complaints about malformed requests included) and the access log."""

from __future__ import annotations

import logging
import time

import jwt
import pytest
from aiohttp.http_exceptions import LineTooLong

from services.edge.redaction import REDACTED, RedactingFilter, redact

TOKEN = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    "text",
    [
        f"token {TOKEN} seen",
        f"Authorization: Bearer {TOKEN}",
        f"Sec-WebSocket-Protocol: docgen.v1, bearer.{TOKEN}",
        f"GET /v1/ws?token={TOKEN}&x=1 HTTP/1.1",
        f"b'Bearer {TOKEN[:60]}...'",  # a truncated token is still a token
        "GET /v1/ws?access_token=opaque-not-a-jwt HTTP/1.1",
    ],
)
def test_tokens_are_redacted(text: str) -> None:
    redacted = redact(text)
    assert "eyJ" not in redacted and "opaque-not-a-jwt" not in redacted
    assert REDACTED in redacted


def test_text_without_credentials_is_left_alone() -> None:
    assert (
        redact("socket closed (code 4500) after 12 frames")
        == "socket closed (code 4500) after 12 frames"
    )


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("test", logging.ERROR, __file__, 1, message, args, exc_info)


def test_a_malformed_request_is_logged_at_info_redacted_without_traceback() -> None:
    try:
        raise LineTooLong(f"Bearer {TOKEN}"[:100].encode() + b"...", 8190)
    except LineTooLong as error:
        record = _record("Error handling request from %s", "127.0.0.1", exc=error)
    assert RedactingFilter().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None and not record.exc_text
    assert "127.0.0.1" in record.getMessage() and "8190" in record.getMessage()
    assert "eyJ" not in record.getMessage()


def test_a_traceback_is_kept_but_redacted() -> None:
    try:
        raise ValueError(f"could not use {TOKEN}")
    except ValueError as error:
        record = _record("failed for %s", f"bearer.{TOKEN}", exc=error)
    RedactingFilter().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_text is not None and "ValueError" in record.exc_text
    assert "eyJ" not in record.exc_text and "eyJ" not in record.getMessage()


def test_span_query_attributes_are_redacted_before_export() -> None:
    """Issue 18, item 9: a token sent in the query by mistake must not land in traces."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from services.common.otel import redacting_processor

    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(redacting_processor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {
        "url.query": f"token={token}",
        "http.target": f"/v1/ws?token={token}",
        "http.url": f"http://127.0.0.1:8080/v1/ws?access_token={token}",
        "url.path": "/v1/ws",
    }
    with provider.get_tracer("test").start_as_current_span("GET /v1/ws", attributes=attributes):
        pass
    provider.shutdown()
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == {
        "url.query": "[redacted]",
        "http.target": "/v1/ws?[redacted]",
        "http.url": "http://127.0.0.1:8080/v1/ws?[redacted]",
        "url.path": "/v1/ws",
    }
    assert token not in str(span.to_json())


def test_user_pseudonyms_are_keyed_not_a_plain_hash() -> None:
    """Issue 18, item 9: sha256(sub)[:12] was reversible by trying likely ids."""
    import hashlib
    import os
    import subprocess
    import sys

    from services.common.logs import hash_user

    assert hash_user("alice@example.com") != hashlib.sha256(b"alice@example.com").hexdigest()[:12]
    assert hash_user("alice") == hash_user("alice") != hash_user("bob")
    code = "from services.common.logs import hash_user; print(hash_user('alice'))"
    env = {k: v for k, v in os.environ.items() if k != "DOCGEN_LOG_PSEUDONYM_KEY"}

    def pseudonym(**extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
        )
        return done.stdout.strip()

    key = "k" * 32
    # One key per deployment: every process names alice alike; without it, each its own way.
    assert pseudonym(DOCGEN_LOG_PSEUDONYM_KEY=key) == pseudonym(DOCGEN_LOG_PSEUDONYM_KEY=key)
    assert pseudonym() != pseudonym()
