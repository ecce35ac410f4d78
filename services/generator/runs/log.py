"""A run's ordered event log: gap-free `seq`, replay from any cursor, then live follow.

`RunReader` is what a follower needs and `RunWriter` what the run's writer (`RunExecution`)
needs, whatever stores the log; `EventSequencer` numbers events the same way for every store.
`MemoryRunLog` keeps a log in this process; `store/redis/log.py` keeps it in Redis Streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from docgen.v1 import events_pb2

from services.generator.errors import CursorOutOfRange

RUNNING = "running"


_STATUS_NAMES = {
    events_pb2.RUN_STATUS_COMPLETED: "completed",
    events_pb2.RUN_STATUS_FAILED: "failed",
    events_pb2.RUN_STATUS_CANCELLED: "cancelled",
}


def status_name(status: events_pb2.RunStatus.ValueType) -> str:
    """`completed`, `failed` or `cancelled`: the name a store keeps for a run's final status
    (the protocol's names; anything else counts as `failed`)."""
    return _STATUS_NAMES.get(status, "failed")


class RunReader(Protocol):
    """A run's log as a follower sees it."""

    run_id: str

    @property
    def last_seq(self) -> int:
        """The last `seq` known here (0 for a run only looked up in a shared store)."""
        ...

    @property
    def closed(self) -> bool:
        """True once `run_end` is known to be appended."""
        ...

    def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        """Every event with `seq > after_seq`, stored then live, ending after `run_end`;
        raises `CursorOutOfRange` first if `after_seq` is past the log."""
        ...

    async def last_event(self) -> events_pb2.RunEvent | None:
        """The run's last event now (None before its first): its `seq` and, once ended, its
        `run_end` say what the run is (`AttachRun`'s opening `RunInfo`)."""
        ...


class RunWriter(RunReader, Protocol):
    """A run's log as its one writer sees it."""

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

    async def aclose(self) -> None:
        """Waits until every appended event is stored."""
        ...


class EventSequencer:
    """Numbers one run's events: `seq` from `last_seq + 1` without gaps, the wall-clock `ts`,
    and nothing after `run_end`."""

    def __init__(self, run_id: str, *, last_seq: int = 0, closed: bool = False) -> None:
        self.run_id = run_id
        self.last_seq = last_seq
        self.closed = closed
        self.final_status = ""
        """The stored name of the status in `run_end`, once appended (`status_name`)."""

    def next(self, payload: dict[str, Any]) -> events_pb2.RunEvent:
        """The next event; `payload` is a single oneof field, e.g. `{"section_chunk": ...}`."""
        if self.closed:
            raise RuntimeError(f"run {self.run_id} has ended; its log is closed")
        self.last_seq += 1
        event = events_pb2.RunEvent(
            run_id=self.run_id,
            seq=self.last_seq,
            ts_unix_ms=time.time_ns() // 1_000_000,
            **payload,
        )
        if "run_end" in payload:
            self.closed = True
            self.final_status = status_name(payload["run_end"].status)
        return event


_RECENT_OBJECTS = 16
"""Events a `MemoryRunLog` also keeps as objects: the ones live followers are about to read
(within a loop iteration or two of the append; one further behind parses the bytes). Each is
two objects the collector tracks (the event and its payload) that outlive the young
generation: with 256 per run, 100 streams kept ~50,000 of them in the middle generation and
its collections paused the generator 30-48 ms; with 16, 2-7 ms (docs/performance.md)."""


class MemoryRunLog:
    """`RunWriter` in memory. Events are appended by one writer (the run) and read by any
    number of followers; each follower sees every event exactly once, in order.

    The log keeps each event serialized: a protobuf message is an object the garbage collector
    tracks, and a run keeps every event until it expires (`DOCGEN_RUN_TTL_S`), so holding them
    as messages made every collection walk every token of every run held (pauses of 40-130 ms
    in the generator at 100 streams, docs/performance.md); bytes are not tracked. The last
    `_RECENT_OBJECTS` events are kept as messages too, so a live follower reads the message
    the writer made and only a replay parses."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._sequencer = EventSequencer(run_id)
        self._events: list[bytes] = []
        self._recent: deque[events_pb2.RunEvent] = deque(maxlen=_RECENT_OBJECTS)
        self._appended = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self._sequencer.last_seq

    @property
    def closed(self) -> bool:
        """True once `run_end` has been appended: nothing follows it."""
        return self._sequencer.closed

    async def last_event(self) -> events_pb2.RunEvent | None:
        return self._recent[-1] if self._recent else None

    @property
    def handed_over(self) -> bool:
        """Never: an in-memory run cannot move to another process."""
        return False

    def append(self, **payload: Any) -> events_pb2.RunEvent:
        event = self._sequencer.next(payload)
        self._events.append(event.SerializeToString())
        self._recent.append(event)
        # Wake every follower at once; each swaps in on its own next wait.
        woken, self._appended = self._appended, asyncio.Event()
        woken.set()
        return event

    def _events_from(self, position: int) -> list[events_pb2.RunEvent]:
        """The events after the first `position` (messages: recent ones as kept, older parsed)."""
        wanted = len(self._events) - position
        recent = self._recent
        if wanted <= len(recent):  # a live follower: the last few, indexed from the end
            return [recent[-back] for back in range(wanted, 0, -1)]
        older = self._events[position : len(self._events) - len(recent)]
        return [events_pb2.RunEvent.FromString(data) for data in older] + list(recent)

    def record_state(self, **fields: str | bytes | int) -> None:
        """Nothing to record: an in-memory run never moves to another process."""

    async def aclose(self) -> None:
        """Nothing to wait for: appends are stored at once."""

    async def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        async for events in self.follow_batches(after_seq):
            for event in events:
                yield event

    async def follow_batches(self, after_seq: int = 0) -> AsyncIterator[list[events_pb2.RunEvent]]:
        """As `follow`, but every event already appended comes in one list (the events a
        follower that fell behind can send in one message: services/generator/event_batches.py)."""
        if after_seq < 0 or after_seq > len(self._events):
            raise CursorOutOfRange(after_seq=after_seq, last_seq=len(self._events))
        position = after_seq
        while True:
            if position < len(self._events):
                batch = self._events_from(position)
                position += len(batch)
                yield batch
            if self.closed and position >= len(self._events):
                return
            if position >= len(self._events):
                await self._appended.wait()
