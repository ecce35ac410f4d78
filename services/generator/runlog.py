"""A run's ordered event log: gap-free `seq`, replay from any cursor, then live follow.

`RunEventLog` is what a run's writer and its followers need, whatever stores the log; `RunLog`
keeps it in this process (the default). `services/generator/redis_runs.py` keeps it in Redis
Streams, shared by every generator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from docgen.v1 import events_pb2

from services.generator.errors import CursorOutOfRange


class RunEventLog(Protocol):
    """A run's log as its writer (`RunExecution`) and the servicer see it."""

    run_id: str

    @property
    def last_seq(self) -> int:
        """The writer's last appended `seq`."""
        ...

    @property
    def closed(self) -> bool:
        """True once `run_end` is known to be appended."""
        ...

    @property
    def handed_over(self) -> bool:
        """True once this writer's appends are no longer stored: another writer goes on."""
        ...

    def append(self, **payload: Any) -> events_pb2.RunEvent:
        """Appends one event (one oneof field of `RunEvent`) with the next `seq`."""
        ...

    def record_state(self, **fields: str | bytes | int) -> None:
        """Remembers writer state stored together with the events appended so far (the
        summary a new writer needs to take the run over); a no-op where runs cannot move."""
        ...

    def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        """Every event with `seq > after_seq`, stored then live, ending after `run_end`;
        raises `CursorOutOfRange` first if `after_seq` is past the log."""
        ...

    async def aclose(self) -> None:
        """Waits until every appended event is stored."""
        ...


class RunLog:
    """Append-only, in memory. Events are appended by one writer (the run) and read by any
    number of followers; each follower sees every event exactly once, in order."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._events: list[events_pb2.RunEvent] = []
        self._closed = False
        self._appended = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        """True once `run_end` has been appended: nothing follows it."""
        return self._closed

    @property
    def handed_over(self) -> bool:
        """Never: an in-memory run cannot move to another process."""
        return False

    def append(self, **payload: Any) -> events_pb2.RunEvent:
        """Appends one event; `payload` is a single oneof field, e.g. `section_chunk=...`."""
        if self._closed:
            raise RuntimeError(f"run {self.run_id} has ended; its log is closed")
        event = events_pb2.RunEvent(
            run_id=self.run_id,
            seq=len(self._events) + 1,
            ts_unix_ms=time.time_ns() // 1_000_000,
            **payload,
        )
        self._events.append(event)
        if "run_end" in payload:
            self._closed = True
        # Wake every follower at once; each swaps in on its own next wait.
        woken, self._appended = self._appended, asyncio.Event()
        woken.set()
        return event

    def record_state(self, **fields: str | bytes | int) -> None:
        """Nothing to record: an in-memory run never moves to another process."""

    async def aclose(self) -> None:
        """Nothing to wait for: appends are stored at once."""

    def events_after(self, after_seq: int) -> list[events_pb2.RunEvent]:
        return self._events[after_seq:]

    async def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        """Yields every event with `seq > after_seq`: stored ones, then live ones, ending
        after `run_end`."""
        if after_seq < 0 or after_seq > len(self._events):
            raise CursorOutOfRange(after_seq=after_seq, last_seq=len(self._events))
        position = after_seq
        while True:
            while position < len(self._events):
                yield self._events[position]
                position += 1
            if self._closed:
                return
            await self._appended.wait()
