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
    """The run's status and last `seq` now, from its last event (one read, whatever stores
    the log: a run known only through the shared store has no `last_seq` here)."""
    status: events_pb2.RunStatus.ValueType = events_pb2.RUN_STATUS_RUNNING
    last = await run.log.last_event()
    last_seq = max(run.log.last_seq, last.seq if last is not None else 0)
    if run.ended and (last is None or not last.HasField("run_end")):
        # Known to have ended here, not stored yet as the last event: read it from the log.
        last = await _event_at(run.log, last_seq)
    if last is not None and last.HasField("run_end"):
        status = last.run_end.status
    return events_pb2.RunInfo(
        run_id=run.run_id,
        document_id=entry.document_id if entry else "",
        status=status,
        last_seq=last_seq,
        started_at_unix_ms=entry.started_at_unix_ms if entry else 0,
    )


async def _event_at(log: RunReader, seq: int) -> events_pb2.RunEvent | None:
    events = log.follow(max(0, seq - 1))
    try:
        return await anext(aiter(events), None)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
