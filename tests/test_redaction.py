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
