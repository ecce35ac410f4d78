"""Reads a planned document's outline from the planner (task T-05) by its id: the one HTTP
call docgen makes to it, as docs/planner.md and docs/planner.openapi.yaml specify.

Exceptions (in services/generator/errors.py, with their gRPC statuses; `code` is the
protocol's error code; only `planner_unavailable` is retryable):
    PlanError                 -- base
    ├── PlanNotFound          -- 404/410: no such document          (plan_not_found)
    ├── PlanForbidden         -- 401/403: the token may not read it  (plan_forbidden)
    ├── PlannerUnavailable    -- 429/5xx/refused after the retries, a timeout, or a
    │                            status docgen does not expect       (planner_unavailable)
    ├── PlannerNotConfigured  -- no `DOCGEN_PLANNER_URL`             (planner_not_configured)
    └── PlanInvalid           -- 200, but the body is not an outline (invalid_outline)

The outline in the body is checked against the same JSON Schema as an inline outline
(`schemas/client/generate.json`); the registry then validates it exactly as an inline one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote

import aiohttp
import jsonschema
import tenacity
from docgen.v1 import outline_pb2

from services.common.outlines import outline_from_json
from services.common.tracing import outgoing_headers
from services.generator.errors import (
    PlanError,
    PlanForbidden,
    PlanInvalid,
    PlannerNotConfigured,
    PlannerUnavailable,
    PlanNotFound,
)
from services.generator.outline import outline_schema

__all__ = [
    "PlanError",
    "PlanForbidden",
    "PlanInvalid",
    "PlanNotFound",
    "PlannerClient",
    "PlannerNotConfigured",
    "PlannerRetry",
    "PlannerUnavailable",
    "outline_from_body",
]

log = logging.getLogger(__name__)

# An outline is at most 64 sections of 4,000-character briefs: a larger body is not one.
MAX_BODY_BYTES = 2 * 1024 * 1024
USER_AGENT = "docgen-generator"


class _Retryable(Exception):
    """One attempt failed in a way worth another (429, 5xx, refused)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PlannerRetry:
    """Retries of a request answered 429/5xx or refused: full-jitter exponential backoff."""

    max_retries: int = 2
    base_delay_s: float = 0.2
    max_delay_s: float = 2.0
    max_retry_after_s: float = 5.0
    """A longer Retry-After is not waited for: the caller gets `planner_unavailable` now."""

    def delay_s(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = error.retry_after_s if isinstance(error, _Retryable) else None
        if retry_after is not None and retry_after <= self.max_retry_after_s:
            return retry_after
        retry = retry_state.attempt_number - 1
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**retry))


@cache
def _outline_validator() -> jsonschema.Draft7Validator:
    # The installed contract (package data), as outline.py reads it: no checkout needed.
    return jsonschema.Draft7Validator(outline_schema())


def outline_from_body(document_id: str, body: bytes) -> outline_pb2.Outline:
    """The outline of a planner's 200 answer for `document_id`; raises `PlanInvalid`."""
    where = f"the planner's outline of {document_id!r}"
    try:
        value: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise PlanInvalid(f"{where} is not JSON") from None
    errors = sorted(_outline_validator().iter_errors(value), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.path) or "the body"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise PlanInvalid(f"{where} is not a valid outline: {at}: {first.message}"[:500] + more)
    if value["document_id"] != document_id:
        raise PlanInvalid(f"{where} is for another document ({value['document_id']!r})"[:300])
    return outline_from_json(value)


def _retry_after_s(headers: Any) -> float | None:
    try:
        return float(headers["Retry-After"]) if headers.get("Retry-After") else None
    except ValueError:
        return None  # an HTTP date: our own backoff instead


def _log_retry(state: tenacity.RetryCallState) -> None:
    reason = state.outcome.exception() if state.outcome else None
    log.info(
        "planner request retried", extra={"attempt": state.attempt_number, "reason": str(reason)}
    )


class PlannerClient:
    """`fetch_outline` over one shared aiohttp session (opened on first use, in the running
    event loop; `close` it at shutdown)."""

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout_s: float,
        retry: PlannerRetry | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._retry = retry or PlannerRetry()
        self._session: aiohttp.ClientSession | None = None

    @property
    def configured(self) -> bool:
        return self._base_url is not None

    def outline_url(self, document_id: str) -> str:
        if self._base_url is None:
            raise PlannerNotConfigured(
                "this server has no planner (DOCGEN_PLANNER_URL is unset): send the outline "
                "itself instead of a plan reference"
            )
        return f"{self._base_url}/v1/documents/{quote(document_id, safe='')}/outline"

    async def fetch_outline(self, document_id: str, *, token: str | None) -> outline_pb2.Outline:
        """The outline the planner holds for `document_id`, read with the caller's `token`
        (sent as `Authorization: Bearer`, never logged). Raises a `PlanError`."""
        url = self.outline_url(document_id)
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(1 + self._retry.max_retries),
            wait=self._retry.delay_s,
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    body = await self._get(url, document_id, token)
        except _Retryable as error:
            raise PlannerUnavailable(
                f"the planner is unavailable ({error}); try again shortly"
            ) from None
        return outline_from_body(document_id, body)

    async def _get(self, url: str, document_id: str, token: str | None) -> bytes:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **outgoing_headers()}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self._client().get(url, headers=headers, allow_redirects=False) as answer:
                status = answer.status
                if status == 200:
                    return await self._read_capped(answer, document_id)
                # The body of a refusal is not read: a planner's error page is not ours to show.
                retry_after = _retry_after_s(answer.headers)
        except TimeoutError:
            # Not retried: a slow planner would otherwise cost the caller its timeout again.
            raise PlannerUnavailable(
                f"the planner did not answer within {self._timeout_s:g} s; try again shortly"
            ) from None
        except aiohttp.ClientPayloadError as error:
            raise _Retryable(f"its answer broke off: {type(error).__name__}") from None
        except (aiohttp.ClientConnectionError, OSError) as error:
            raise _Retryable(f"cannot connect: {type(error).__name__}") from None
        if status in (404, 410):
            raise PlanNotFound(f"the planner has no document {document_id!r}")
        if status in (401, 403):
            raise PlanForbidden(
                f"the planner refused this user access to document {document_id!r} (HTTP {status})"
            )
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}", retry_after_s=retry_after)
        raise PlannerUnavailable(
            f"the planner answered HTTP {status}, which docgen does not expect "
            "(docs/planner.md); tell the operators"
        )

    async def _read_capped(self, answer: aiohttp.ClientResponse, document_id: str) -> bytes:
        if (answer.content_length or 0) > MAX_BODY_BYTES:
            raise PlanInvalid(
                f"the planner's outline of {document_id!r} is over {MAX_BODY_BYTES} bytes"
            )
        body = bytearray()
        async for piece in answer.content.iter_chunked(64 * 1024):
            body += piece
            if len(body) > MAX_BODY_BYTES:
                raise PlanInvalid(
                    f"the planner's outline of {document_id!r} is over {MAX_BODY_BYTES} bytes"
                )
        return bytes(body)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # aiohttp's connector closes its sockets one loop turn later.
            await asyncio.sleep(0)
