"""Which runs each user started through this generator, and under which `request_id`: what
`ListRuns` lists and what makes `StartRun` idempotent. Plus `describe`, the `RunInfo` of a run
(its status and last `seq` right now), read from the run's log whatever stores it.

The directory lives in this process: with a shared run log (Redis), a generator lists and
de-duplicates only the runs started through it (the edge's round-robin spreads one user's
calls over generators, so a repeated `generate` may land elsewhere and start a second run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from docgen.v1 import events_pb2

from services.generator.runs.log import RunReader

# A user's directory keeps their latest runs only; older entries are long expired anyway
# (a user may have 4 unfinished runs, and finished ones live for DOCGEN_RUN_TTL_S).
MAX_RUNS_PER_USER_LISTED = 256


class DescribedRun(Protocol):
    """What `describe` needs of a run (`runs.Run`)."""

    run_id: str

    @property
    def log(self) -> RunReader: ...

    @property
    def ended(self) -> bool: ...


@dataclass(frozen=True)
class DirectoryEntry:
    run_id: str
    request_id: str
    document_id: str
    started_at_unix_ms: int


class RunDirectory:
    def __init__(self) -> None:
        self._by_user: dict[str, OrderedDict[str, DirectoryEntry]] = {}
        self._starting: dict[tuple[str, str], asyncio.Lock] = {}

    def record(self, user_id: str, entry: DirectoryEntry) -> None:
        runs = self._by_user.setdefault(user_id, OrderedDict())
        runs[entry.run_id] = entry
        while len(runs) > MAX_RUNS_PER_USER_LISTED:
            runs.popitem(last=False)

    def forget(self, user_id: str, run_id: str) -> None:
        runs = self._by_user.get(user_id)
        if runs is not None:
            runs.pop(run_id, None)
            if not runs:
                del self._by_user[user_id]

    def entries(self, user_id: str) -> list[DirectoryEntry]:
        """Oldest first."""
        return list(self._by_user.get(user_id, {}).values())

    def by_request(self, user_id: str, request_id: str) -> DirectoryEntry | None:
        """The newest run this user started with `request_id`."""
        for entry in reversed(self.entries(user_id)):
            if entry.request_id == request_id:
                return entry
        return None

    @contextlib.asynccontextmanager
    async def starting(self, user_id: str, request_id: str) -> AsyncIterator[None]:
        """Serialises the look-up-then-start of one (user, request id), so two copies of the
        same `generate` arriving together start one run. No lock without a request id."""
        if not request_id:
            yield
            return
        key = (user_id, request_id)
        lock = self._starting.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._starting.get(key) is lock:
                del self._starting[key]


def now_unix_ms() -> int:
    return time.time_ns() // 1_000_000


async def describe(run: DescribedRun, entry: DirectoryEntry | None = None) -> events_pb2.RunInfo:
    """The run's status and last `seq` now. A run this process writes knows its last `seq`;
    a run known only through the shared store is read (its `run_end` says how it ended)."""
    status: events_pb2.RunStatus.ValueType = events_pb2.RUN_STATUS_RUNNING
    last_seq = run.log.last_seq
    document_id = entry.document_id if entry else ""
    started_at = entry.started_at_unix_ms if entry else 0
    ended = run.ended
    if ended or last_seq == 0:
        # Read from the last known position (0 for a run only looked up in the store).
        events = run.log.follow(max(0, last_seq - 1))
        try:
            async for event in _until_now(events, ended):
                last_seq = max(last_seq, event.seq)
                if event.HasField("run_started"):
                    document_id = document_id or event.run_started.document_id
                    started_at = started_at or event.ts_unix_ms
                elif event.HasField("run_end"):
                    status = event.run_end.status
        finally:
            await events.aclose()  # type: ignore[attr-defined]
    return events_pb2.RunInfo(
        run_id=run.run_id,
        document_id=document_id,
        status=status,
        last_seq=last_seq,
        started_at_unix_ms=started_at,
    )


async def _until_now(
    events: AsyncIterator[events_pb2.RunEvent], ended: bool
) -> AsyncIterator[events_pb2.RunEvent]:
    """The stored events: all of them for an ended run, or what arrives without waiting for a
    live one (a short idle timeout) for a running run."""
    iterator = events.__aiter__()
    while True:
        try:
            if ended:
                event = await iterator.__anext__()
            else:
                event = await asyncio.wait_for(iterator.__anext__(), timeout=0.05)
        except (StopAsyncIteration, TimeoutError):
            return
        yield event
