"""`generate.options.chunk_interval_ms`: at most one `section_chunk` per interval per section.

`CoalescingWriter` sits between a run's writer (`RunExecution`) and its log. A delta that
comes when the section's last chunk is at least an interval old is appended at once (so the
first delta of a section, and every delta of a slow stream, is never held back); deltas that
come sooner are held and appended as one chunk, their texts concatenated in order, when the
interval since the last chunk is up. Any other event (`section_end`, a retry's
`section_start`, an error, `run_end`) first appends what is held, so every event keeps its
place and the log stays gap-free: `seq`, the section's text and its `text_sha256` mean what
they mean without coalescing, with fewer, larger chunks. Fewer events is less work per token
for every hop (log, gRPC, edge, WebSocket) and for the client."""

from __future__ import annotations

import asyncio
from typing import Any

from docgen.v1 import events_pb2

from services.generator.runs.log import RunWriter

MAX_CHUNK_INTERVAL_MS = 1000
"""Longer intervals are refused (INVALID_ARGUMENT): text would arrive in visible lumps."""


class CoalescingWriter:
    """A `RunWriter` that coalesces `section_chunk` appends of `log` (see the module)."""

    def __init__(self, log: RunWriter, interval_ms: int) -> None:
        self._log = log
        self._interval_s = interval_ms / 1000
        self._loop = asyncio.get_running_loop()
        self._held: list[str] = []
        self._held_chunk: events_pb2.SectionChunk | None = None
        self._last_chunk_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    @property
    def run_id(self) -> str:
        return self._log.run_id

    @property
    def last_seq(self) -> int:
        return self._log.last_seq

    @property
    def closed(self) -> bool:
        return self._log.closed

    @property
    def handed_over(self) -> bool:
        return self._log.handed_over

    def follow(self, after_seq: int = 0) -> Any:
        return self._log.follow(after_seq)

    def append(self, **payload: Any) -> events_pb2.RunEvent | None:
        """Appends the event, or (a chunk held for later) returns None."""
        chunk: events_pb2.SectionChunk | None = payload.get("section_chunk")
        if chunk is None:
            self.flush()
            if "section_start" in payload:
                self._last_chunk_at = float("-inf")  # a section's first delta goes at once
            return self._log.append(**payload)
        held = self._held_chunk
        if held is not None and (held.section_id, held.index) != (chunk.section_id, chunk.index):
            self.flush()  # never concatenate two sections' text (not expected: see above)
        now = self._loop.time()
        if self._held_chunk is None and now - self._last_chunk_at >= self._interval_s:
            self._last_chunk_at = now
            return self._log.append(section_chunk=chunk)
        if self._held_chunk is None:
            self._held_chunk = chunk
            self._timer = self._loop.call_at(self._last_chunk_at + self._interval_s, self.flush)
        self._held.append(chunk.delta)
        return None

    def flush(self) -> None:
        """Appends the held deltas as one chunk now (nothing when none is held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        chunk = self._held_chunk
        if chunk is None:
            return
        delta = "".join(self._held)
        self._held_chunk = None
        self._held = []
        self._last_chunk_at = self._loop.time()
        if self._log.closed:
            return  # the run ended meanwhile (cannot happen: run_end flushes first)
        self._log.append(
            section_chunk=events_pb2.SectionChunk(
                section_id=chunk.section_id, index=chunk.index, delta=delta
            )
        )

    def record_state(self, **fields: str | bytes | int) -> None:
        self.flush()  # the state belongs after every event appended before it
        self._log.record_state(**fields)

    async def aclose(self) -> None:
        self.flush()
        await self._log.aclose()


def coalescing(log: RunWriter, interval_ms: int) -> RunWriter:
    """`log` itself for 0 (every delta its own chunk), else a `CoalescingWriter` around it."""
    if interval_ms <= 0:
        return log
    return CoalescingWriter(log, interval_ms)  # type: ignore[return-value]
