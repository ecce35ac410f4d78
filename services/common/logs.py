"""Structured logs shared by the services: one JSON object per line on stderr, carrying the
trace id, run id and other fields bound to the current task (`bind_log_context`).

Level from `DOCGEN_LOG_LEVEL` (default INFO). Format from `DOCGEN_LOG_FORMAT`: `json`, or
`text` (one short human-readable line per event, for a terminal); by default `text` when
stderr is a terminal and `json` otherwise (`make run` asks its children for `text` when it
runs in a terminal). Prompt text and tokens are never logged at
INFO; user ids only as a short hash (`hash_user`)."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from services.common.env import ConfigError

# Never mutated in place: every change sets a new mapping, so tasks never share one.
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "docgen_log_context", default=MappingProxyType({})
)


# A plain sha256(user) is reversible by trying likely ids (emails, employee numbers): the
# pseudonym is keyed. One key per deployment (`DOCGEN_LOG_PSEUDONYM_KEY`, the same on every
# process) correlates a user's lines across services and restarts; unset, each process draws
# its own, so its lines still correlate with each other but not with other processes'.
_PSEUDONYM_KEY = (os.environ.get("DOCGEN_LOG_PSEUDONYM_KEY") or "").encode() or secrets.token_bytes(
    32
)


def hash_user(user_id: str) -> str:
    """A stable pseudonym for logs: correlates a user's lines without naming them, and cannot
    be reversed without the key (HMAC-SHA256, `DOCGEN_LOG_PSEUDONYM_KEY`)."""
    return hmac.new(_PSEUDONYM_KEY, user_id.encode(), hashlib.sha256).hexdigest()[:12]


def current_log_context() -> Mapping[str, Any]:
    return _CONTEXT.get()


def set_log_context(**fields: Any) -> None:
    """Adds fields to the current context (for the rest of this task and tasks it starts)."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


@contextlib.contextmanager
def bind_log_context(**fields: Any) -> Iterator[None]:
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def json_handler(service: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ContextFilter(service))
    return handler


# Fields every record has; whatever else a record carries was bound or passed in `extra`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "service",
    "taskName",
}
# Correlation ids for machines; a person reading a terminal follows the run id instead.
_TEXT_HIDDEN = frozenset({"trace_id", "span_id", "user", "otelTraceID", "otelSpanID"})


class TextFormatter(logging.Formatter):
    """`12:03:04 section ended · run_id=run_Qe… section_id=intro finish_reason=stop`: the
    time, the level unless INFO, the message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        time_ = self.formatTime(record, "%H:%M:%S")
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        fields = " ".join(
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _RECORD_FIELDS and key not in _TEXT_HIDDEN and value is not None
        )
        line = f"{time_} {level}{record.getMessage()}" + (f" · {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def text_handler(service: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(TextFormatter())
    handler.addFilter(_ContextFilter(service))
    return handler


def log_format(stream: Any = None) -> str:
    """`json` or `text`: `DOCGEN_LOG_FORMAT` when set, else text only on a terminal."""
    chosen = os.environ.get("DOCGEN_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    if chosen:
        raise ConfigError(f"DOCGEN_LOG_FORMAT={chosen!r}: expected 'json' or 'text'")
    stream = stream or sys.stderr
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(service: str) -> None:
    level = os.environ.get("DOCGEN_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    handler = text_handler if log_format() == "text" else json_handler
    root.handlers[:] = [handler(service)]
    root.setLevel(level)
    # httpx logs every request line at INFO, which is noise per section.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
