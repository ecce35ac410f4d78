"""Streams one section's text from an OpenAI-compatible LLM.

Reads the raw SSE lines through the `openai` client (`with_streaming_response`) and decodes
the JSON itself: the typed stream parser costs ~7x more CPU per token (see DESIGN.md).

Given a `SectionShape`, the text is shaped on its way: scaffolding the model echoes is filtered
out (services/generator/scaffolding.py) and the stream is ended at the first sentence end once
the target length is reached (services/common/sentence_end.py), closing the LLM request; near
the target the text goes out a whole sentence at a time, so a section the LLM cuts at its hard
cap still ends after a whole sentence.

Exceptions:
    LLMError                 -- base; `code` is the stable error code sent to clients
    ├── LLMUnavailable       -- nothing streamed: 429/5xx/refused after the client's retries
    ├── LLMRejected          -- the LLM refused the request itself (4xx): retrying won't help
    └── LLMStreamFailed      -- the stream broke or stalled after it started
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from services.common.chat_stream import (
    STREAM_ERRORS,
    ChatStreamError,
    decode_line,
    final_finish_reason,
)
from services.common.sentence_end import HOLD_FROM_SHARE, SentenceStop, SentenceTail
from services.common.sse_lines import body_reader, split_lines
from services.generator.scaffolding import ScaffoldingFilter

# A stall (our watchdog) is a TimeoutError on top of what any stream read can raise.
_READ_ERRORS: tuple[type[Exception], ...] = (*STREAM_ERRORS, TimeoutError)


class LLMError(Exception):
    code = "llm_error"
    retryable = True

    def __init__(self, message: str, *, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text


class LLMUnavailable(LLMError):
    code = "llm_unavailable"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMRejected(LLMError):
    code = "llm_rejected"
    retryable = False


class LLMStreamFailed(LLMError):
    code = "llm_stream_failed"


@dataclass(frozen=True)
class SectionShape:
    """How a section's text is shaped between the LLM and the client."""

    target_tokens: int
    """Once this many tokens have been produced, the stream ends at the next sentence end."""
    titles: Sequence[str] = ()
    """The document's and the section's titles (and the section's brief): an opening line
    that repeats one is dropped."""
    language: str = "en"
    """BCP 47 tag of the text, for its abbreviations ("p. ej." does not end a sentence)."""
    stop: Sequence[str] = ()
    """Stop sequences sent with the request (none when empty)."""


@dataclass(frozen=True)
class SectionText:
    text: str
    finish_reason: str
    """`stop`, `length` or `content_filter`, as the LLM reported it; `stop` also when the
    stream was ended at a sentence end past the target."""
    output_tokens: int
    """Reported usage when the server gives it, else the number of content deltas."""
    ttft_ms: int


def _translate(error: Exception, *, started: bool, partial_text: str) -> LLMError:
    """The one place where openai/httpx failures become docgen's LLM errors."""
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        if status in (408, 409, 429) or status >= 500:
            return LLMUnavailable(
                f"the LLM answered HTTP {status}; try again later",
                retry_after_s=_retry_after_s(error.response.headers),
            )
        return LLMRejected(f"the LLM rejected the request (HTTP {status}): {error.message}")
    if started:
        return LLMStreamFailed(
            f"the LLM stream broke: {type(error).__name__}", partial_text=partial_text
        )
    if isinstance(error, TimeoutError):
        return LLMStreamFailed("the LLM accepted the request but sent no token in time")
    return LLMUnavailable(f"the LLM is unreachable ({type(error).__name__}); try again later")


def _retry_after_s(headers: Any) -> float | None:
    """Seconds from `Retry-After` (or `retry-after-ms`), when the server sent a usable one."""
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None  # an HTTP date: rare from LLM servers; fall back to our own backoff
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a request that failed before its first token (429, 5xx, refused)."""

    max_retries: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0
    """A longer Retry-After is not waited for: the section fails with `llm_unavailable`."""

    def delay_s(self, retry: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return retry_after_s
        # "Full jitter" (AWS architecture blog): spreads retries of many runs apart.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**retry))


class SectionWriter:
    """Writes sections with one shared `openai.AsyncOpenAI` client (built with
    `max_retries=0`: retries are ours, so they are counted and bounded per section)."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        temperature: float,
        stall_timeout_s: float,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[LLMUnavailable], None] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._extra_body = dict(extra_body) if extra_body else None
        self._model = model
        self._temperature = temperature
        self._stall_timeout_s = stall_timeout_s
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry

    async def write(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        on_delta: Callable[[str], None],
        extra_headers: dict[str, str] | None = None,
        shape: SectionShape | None = None,
    ) -> SectionText:
        """Streams one completion, calling `on_delta` per content delta (shaped by `shape`,
        when given); retries failures that happen before the first token. Cancelling the
        calling task closes the HTTP stream (the LLM server sees the connection close)."""
        retry = 0
        while True:
            try:
                return await self._stream_once(
                    messages,
                    max_tokens=max_tokens,
                    on_delta=on_delta,
                    extra_headers=extra_headers,
                    shape=shape,
                )
            except LLMUnavailable as error:
                if retry >= self._retry.max_retries or (
                    error.retry_after_s is not None
                    and error.retry_after_s > self._retry.max_retry_after_s
                ):
                    raise
                if self._on_retry is not None:
                    self._on_retry(error)
                await asyncio.sleep(self._retry.delay_s(retry, error.retry_after_s))
                retry += 1

    async def _stream_once(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        on_delta: Callable[[str], None],
        extra_headers: dict[str, str] | None,
        shape: SectionShape | None,
    ) -> SectionText:
        parts: list[str] = []
        deltas = 0
        # A fresh filter per attempt: a retried section starts over (with its next `attempt`).
        scaffolding = ScaffoldingFilter(shape.titles) if shape is not None else None
        sentence_stop = (
            SentenceStop(shape.target_tokens, shape.language) if shape is not None else None
        )
        sentence_tail = (
            SentenceTail(math.ceil(HOLD_FROM_SHARE * shape.target_tokens), shape.language)
            if shape is not None
            else None
        )
        ended_at_sentence = False
        stop = list(shape.stop) if shape is not None and shape.stop else None
        usage_tokens: int | None = None
        finish_reason: str | None = None
        done = False
        started_at = time.monotonic()
        ttft_ms = 0
        stream_open = False
        try:
            async with self._client.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
                model=self._model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=self._temperature,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=extra_headers,
                extra_body=self._extra_body,
                **({"stop": stop} if stop else {}),
            ) as response:
                stream_open = True
                # Lines split from the body's bytes: cheaper per token than iter_lines().
                read, _ = body_reader(response)
                lines = split_lines(read).__aiter__()
                loop = asyncio.get_running_loop()
                stall = self._stall_timeout_s
                # One stall timer for the whole stream, pushed forward lazily instead of a new
                # timeout per token (a measurable share of CPU per token): after each token
                # at least `stall` and at most 1.5 x `stall` remain before it fires.
                async with asyncio.timeout(1.5 * stall) as watchdog:
                    while True:
                        try:
                            line = await lines.__anext__()
                        except StopAsyncIteration:
                            break
                        deadline = watchdog.when()
                        if deadline is not None and deadline - loop.time() < stall:
                            watchdog.reschedule(loop.time() + 1.5 * stall)
                        try:
                            chunk = decode_line(line)
                        except ChatStreamError as error:
                            raise LLMStreamFailed(str(error)) from None
                        if chunk is None:
                            continue
                        if chunk.done:
                            done = True
                            break
                        if chunk.completion_tokens is not None:
                            usage_tokens = chunk.completion_tokens
                        if chunk.content:
                            if (
                                sentence_stop is not None
                                and sentence_tail is not None
                                and scaffolding is not None
                                and not scaffolding.holding
                                and sentence_stop.should_stop(
                                    deltas, sentence_tail.written, chunk.content
                                )
                            ):
                                # Leaving the `async with` closes the HTTP stream: the LLM
                                # stops generating.
                                ended_at_sentence = True
                                break
                            if deltas == 0:
                                ttft_ms = int((time.monotonic() - started_at) * 1000)
                            deltas += 1
                            text = (
                                scaffolding.feed(chunk.content)
                                if scaffolding is not None
                                else chunk.content
                            )
                            if text and sentence_tail is not None:
                                text = sentence_tail.feed(deltas, text)
                            if text:
                                parts.append(text)
                                on_delta(text)
                        if chunk.finish_reason:
                            finish_reason = chunk.finish_reason
                if ended_at_sentence:
                    finish_reason, done = "stop", True  # ended by us, after a whole sentence
                try:
                    finish_reason = final_finish_reason(finish_reason, done=done)
                except ChatStreamError as error:
                    # Cut short without saying so: retried like a broken stream, never `stop`.
                    raise LLMStreamFailed(str(error)) from None
        except LLMError as error:
            error.partial_text = "".join(parts)
            raise
        except _READ_ERRORS as error:
            raise _translate(error, started=stream_open, partial_text="".join(parts)) from error
        rest = scaffolding.flush() if scaffolding is not None else ""
        if sentence_tail is not None:
            rest = sentence_tail.feed(deltas, rest) if rest else ""
            rest += sentence_tail.finish(cut=finish_reason == "length")
        if rest:
            parts.append(rest)
            on_delta(rest)
        return SectionText(
            text="".join(parts),
            finish_reason=finish_reason,
            output_tokens=usage_tokens if usage_tokens is not None else deltas,
            ttft_ms=ttft_ms,
        )
