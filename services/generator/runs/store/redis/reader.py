"""Reading a run's stream, from any generator: replay (XRANGE) then live follow (XREAD),
riding over short Redis outages."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from docgen.v1 import events_pb2

from services.generator.errors import CursorOutOfRange, RunLogUnavailable, RunLost
from services.generator.runs.store.redis.keys import (
    FOLLOW_BLOCK_MS,
    READ_PAGE,
    TRANSIENT,
    entry_id,
    events_key,
    meta_key,
    seq_of,
)

T = TypeVar("T")


class StreamReader:
    def __init__(self, redis: Any, *, retry_s: float) -> None:
        self._redis = redis
        self.retry_s = retry_s

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        failing_since = time.monotonic()
        backoff_s = 0.05
        while True:
            try:
                return await operation()
            except TRANSIENT as error:
                if time.monotonic() - failing_since > self.retry_s:
                    raise RunLogUnavailable(
                        f"the run store has been unreachable for {self.retry_s:.0f} s; resume later"
                    ) from error
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 1.0)

    async def last_event(self, run_id: str) -> events_pb2.RunEvent | None:
        """The run's last stored event (one XREVRANGE), None for an empty log."""
        redis = self._redis
        top = await self._retrying(lambda: redis.xrevrange(events_key(run_id), "+", "-", count=1))
        return events_pb2.RunEvent.FromString(top[0][1][b"e"]) if top else None

    async def follow(self, run_id: str, after_seq: int) -> AsyncIterator[events_pb2.RunEvent]:
        """Replays the stored events after `after_seq` (XRANGE), then blocks for new ones
        (XREAD), until `run_end`."""
        async for page in self.follow_batches(run_id, after_seq):
            for event in page:
                yield event

    async def follow_batches(
        self, run_id: str, after_seq: int
    ) -> AsyncIterator[list[events_pb2.RunEvent]]:
        """As `follow`, one list per Redis read (services/generator/event_batches.py)."""
        redis = self._redis
        key = events_key(run_id)
        top = await self._retrying(lambda: redis.xrevrange(key, "+", "-", count=1))
        last_seq = seq_of(top[0][0]) if top else 0
        if after_seq < 0 or after_seq > last_seq:
            raise CursorOutOfRange(after_seq=after_seq, last_seq=last_seq)
        position = after_seq
        while position < last_seq:
            start = entry_id(position + 1)
            page = await self._retrying(
                functools.partial(redis.xrange, key, start, "+", count=READ_PAGE)
            )
            if not page:
                break
            events, ended = _events_of(page)
            position = events[-1].seq
            yield events
            if ended:
                return
        while True:
            cursor = entry_id(position)
            response = await self._retrying(
                functools.partial(
                    redis.xread, {key: cursor}, count=READ_PAGE, block=FOLLOW_BLOCK_MS
                )
            )
            if not response:
                if not await self._retrying(lambda: redis.exists(meta_key(run_id))):
                    raise RunLost(
                        f"run {run_id} is no longer stored (expired, or the store lost it)"
                    )
                continue
            events, ended = _events_of(response[0][1])
            position = events[-1].seq
            yield events
            if ended:
                return


def _events_of(entries: list[Any]) -> tuple[list[events_pb2.RunEvent], bool]:
    """The events of stream entries, up to `run_end`; and whether `run_end` was among them."""
    events = []
    for _entry, fields in entries:
        event = events_pb2.RunEvent.FromString(fields[b"e"])
        events.append(event)
        if event.HasField("run_end"):
            return events, True
    return events, False


class RedisRunView:
    """`RunReader` of a run another generator writes (or wrote), found by `lookup`."""

    def __init__(self, reader: StreamReader, run_id: str, *, closed: bool) -> None:
        self.run_id = run_id
        self._reader = reader
        self._closed = closed

    @property
    def last_seq(self) -> int:
        return 0  # unknown until read: `follow` or `last_event` finds it

    async def last_event(self) -> events_pb2.RunEvent | None:
        return await self._reader.last_event(self.run_id)

    @property
    def closed(self) -> bool:
        return self._closed

    def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        return self._reader.follow(self.run_id, after_seq)

    def follow_batches(self, after_seq: int = 0) -> AsyncIterator[list[events_pb2.RunEvent]]:
        return self._reader.follow_batches(self.run_id, after_seq)
