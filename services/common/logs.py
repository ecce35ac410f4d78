"""Structured logs shared by the services: one JSON object per line on stderr, carrying the
trace id, run id and other fields bound to the current task (`bind_log_context`).

Level from `DOCGEN_LOG_LEVEL` (default INFO). Prompt text and tokens are never logged at
INFO; user ids only as a short hash (`hash_user`)."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Never mutated in place: every change sets a new mapping, so tasks never share one.
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "docgen_log_context", default=MappingProxyType({})
)


def hash_user(user_id: str) -> str:
    """A stable pseudonym for logs: correlates a user's lines without naming them."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:12]


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


def configure_logging(service: str) -> None:
    level = os.environ.get("DOCGEN_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    root.handlers[:] = [json_handler(service)]
    root.setLevel(level)
    # httpx logs every request line at INFO, which is noise per section.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
