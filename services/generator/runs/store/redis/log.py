"""`RedisRunLog`: the writer's side of one run's stream. Appends are numbered at once (so
`append` stays synchronous for `RunExecution`) and stored in order, in batches, by one
background task per run; a writer that loses its lease stops storing at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from docgen.v1 import events_pb2
from redis.exceptions import RedisError

from services.generator.runs.log import EventSequencer
from services.generator.runs.store.redis.keys import APPEND_BATCH, TRANSIENT, LeaseLost

log = logging.getLogger(__name__)


class LogStore(Protocol):
    """What a `RedisRunLog` needs from its store."""

    retry_s: float

    async def store_batch(
        self,
        run_log: RedisRunLog,
        first_seq: int,
        events: list[bytes],
        state: dict[str, str | bytes | int],
        final_status: str,
    ) -> None: ...

    def forget(self, run_log: RedisRunLog) -> None: ...

    def lost(self, run_log: RedisRunLog, reason: str) -> None: ...

    def follow(self, run_id: str, after_seq: int) -> AsyncIterator[events_pb2.RunEvent]: ...

    def follow_batches(
        self, run_id: str, after_seq: int
    ) -> AsyncIterator[list[events_pb2.RunEvent]]: ...


class RedisRunLog:
    """`RunWriter` on a Redis stream, holding the lease `token`."""

    def __init__(self, store: LogStore, run_id: str, *, token: str, last_seq: int = 0) -> None:
        self.run_id = run_id
        self.token = token
        self._store = store
        self._sequencer = EventSequencer(run_id, last_seq=last_seq)
        self._stored_seq = last_seq
        self._pending: list[bytes] = []
        self._state: dict[str, str | bytes | int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._last_event: events_pb2.RunEvent | None = None
        self.fenced = False
        """Set when the run is handed over or the lease is lost: appends are dropped."""
        self.lost = False
        """Set when the lease was lost: queued events are dropped too."""
        self.end_stored = False
        """Set once `run_end` is stored (the script also did the end-of-run bookkeeping)."""

    @property
    def last_seq(self) -> int:
        return self._sequencer.last_seq

    @property
    def closed(self) -> bool:
        return self._sequencer.closed

    @property
    def handed_over(self) -> bool:
        return self.fenced

    def append(self, **payload: Any) -> events_pb2.RunEvent:
        event = self._sequencer.next(payload)
        self._last_event = event
        if not self.fenced:
            self._pending.append(event.SerializeToString())
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(
                    self._flush(), name=f"runlog-flush-{self.run_id}"
                )
        return event

    def record_state(self, **fields: str | bytes | int) -> None:
        if not self.fenced:
            self._state.update(fields)

    async def aclose(self) -> None:
        if self._flusher is not None:
            # Shielded: a cancel of the caller must not cut the last events (run_end) off.
            await asyncio.shield(self._flusher)

    def fence(self) -> None:
        self.fenced = True

    async def last_event(self) -> events_pb2.RunEvent | None:
        """The writer's last appended event (None before its first here: a run taken over
        starts from its stored log, whose `last_seq` the writer already knows)."""
        return self._last_event

    def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        return self._store.follow(self.run_id, after_seq)

    def follow_batches(self, after_seq: int = 0) -> AsyncIterator[list[events_pb2.RunEvent]]:
        return self._store.follow_batches(self.run_id, after_seq)

    async def _flush(self) -> None:
        """Stores the queued events in order, as batches, until the queue is empty (the next
        append starts it again)."""
        failing_since: float | None = None
        backoff_s = 0.05
        while self._pending and not self.lost:
            events = self._pending[:APPEND_BATCH]
            whole = len(events) == len(self._pending)
            # State belongs with the last event appended before it: send it with the batch
            # that ends there.
            state, self._state = (self._state, {}) if whole else ({}, self._state)
            final = self._sequencer.final_status if whole and self.closed else ""
            try:
                await self._store.store_batch(self, self._stored_seq + 1, events, state, final)
            except LeaseLost:
                self.lose("its lease lapsed (another generator may hold it)")
                return
            except TRANSIENT as error:
                self._state = {**state, **self._state}
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self._store.retry_s:
                    self.lose(f"Redis unreachable for {self._store.retry_s:.0f} s ({error!r})")
                    return
                log.warning(
                    "run log write failed; retrying",
                    extra={"run_id": self.run_id, "error": repr(error)},
                )
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 1.0)
                continue
            except RedisError as error:  # e.g. an XADD id refused: somebody else wrote
                self.lose(f"Redis refused the append ({error})")
                return
            except Exception as error:  # a bug: stop writing rather than write wrong
                log.exception("run log write failed unexpectedly", extra={"run_id": self.run_id})
                self.lose(f"unexpected {type(error).__name__}")
                return
            failing_since, backoff_s = None, 0.05
            del self._pending[: len(events)]
            self._stored_seq += len(events)
            if final:
                self.end_stored = True
                self._store.forget(self)

    def lose(self, reason: str) -> None:
        """Stops at once: the lease is gone, so nothing more of this writer may be stored."""
        if self.lost:
            return
        self.lost = self.fenced = True
        self._pending.clear()
        self._state.clear()
        self._store.lost(self, reason)
