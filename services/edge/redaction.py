"""Keeps credentials out of the edge's logs: a filter that rewrites log records and an access
logger that never sees a header or a query string.

aiohttp logs a malformed request with the first 100 bytes of the offending line, which can
be an `Authorization` header or a URL carrying a token; the filter runs before any handler
formats such a record, so neither the message nor the traceback keeps a token.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

REDACTED = "[redacted]"

_PATTERNS = (
    # A JWT, or the start of one: its header always begins with `{"` = eyJ in base64url.
    re.compile(r"eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*){0,2}"),
    re.compile(r"(?i)(bearer[ .])[^\s,;'\"]+"),
    re.compile(r"(?i)((?:authorization|sec-websocket-protocol)\s*[:=]\s*)[^\r\n'\"]+"),
    re.compile(
        r"(?i)([?&](?:token|access_token|id_token|jwt|bearer|auth|authorization)=)[^&\s'\"]*"
    ),
)


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Formats each record's message and traceback once, redacted. A client's malformed
    request (aiohttp's `HttpProcessingError`) is its problem, not the server's: it is logged
    at INFO without a traceback, so hostile input cannot fill the logs with errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        try:
            message = redact(record.getMessage())
        except Exception:  # a bad format string must not break the caller
            message = redact(str(record.msg))
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            message = f"{message}: {redact(str(exc))}"
            record.exc_info, record.exc_text = None, None
        elif record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.msg, record.args = message, None
        return True


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: client, method, path without its query, status, duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms",
            request.remote,
            request.method,
            redact(request.path),
            response.status,
            time * 1000,
        )


def http_logger(name: str) -> logging.Logger:
    """A logger carrying the redacting filter (filters run only for records logged on it)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
