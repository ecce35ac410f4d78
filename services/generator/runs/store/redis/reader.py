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

    async def follow(self, run_id: str, after_seq: int) -> AsyncIterator[events_pb2.RunEvent]:
        """Replays the stored events after `after_seq` (XRANGE), then blocks for new ones
        (XREAD), until `run_end`."""
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
            for _entry, fields in page:
                event = events_pb2.RunEvent.FromString(fields[b"e"])
                position = event.seq
                yield event
                if event.HasField("run_end"):
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
            for _entry, fields in response[0][1]:
                event = events_pb2.RunEvent.FromString(fields[b"e"])
                position = event.seq
                yield event
                if event.HasField("run_end"):
                    return


class RedisRunView:
    """`RunReader` of a run another generator writes (or wrote), found by `lookup`."""

    def __init__(self, reader: StreamReader, run_id: str, *, closed: bool) -> None:
        self.run_id = run_id
        self._reader = reader
        self._closed = closed

    @property
    def last_seq(self) -> int:
        return 0  # unknown until read: `follow` finds it

    @property
    def closed(self) -> bool:
        return self._closed

    def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        return self._reader.follow(self.run_id, after_seq)
