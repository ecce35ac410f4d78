"""The edge's end of the generator's event streams (`OpenEventStream`, docs/grpc.md): one
long-lived stream per generator channel carries the events of every run this edge follows
there, several runs' events per message when they are ready together.

`EventStreams.get` opens the channel's stream lazily (shared by every caller, reopened after
it breaks). Its reader loop hands each entry to the queue of the call it belongs to (by the
call's `follow_key`) and never waits for a consumer: a slow socket delays no other run (the
session's outbox closes slow consumers). `EventStream.events` is one `StartRun`/`AttachRun`
call's items: the opening `RunInfo` from the call itself (AttachRun), then the run's events
from the queue until `run_end`, watching the call meanwhile for its status.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import grpc
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc

from services.edge.generator_errors import (
    ERROR_CODE_METADATA,
    GeneratorUnavailable,
    error_from_status,
    trailer,
)

log = logging.getLogger(__name__)

RUN_END_WAIT_S = 10.0
"""How long a call that ended OK waits for its `run_end` to arrive on the event stream (the
generator hands it over before the call ends, but the two travel separately)."""
REOPEN_AFTER_S = 1.0
"""After a failed open, calls go without an event stream this long before the next try."""

_CALL_DONE = object()
_BROKEN = object()

CallWith = Callable[[str, str], Any]
"""Makes the per-run call (a `grpc.aio.UnaryStreamCall`) naming (event stream id, follow key);
("", "") makes it without an event stream."""


class EventStreamBroken(Exception):
    """The event stream ended while a call's events were travelling on it: re-attach."""


class EventStream:
    """One open event stream: its id, its reader, the queues of the calls that use it."""

    def __init__(self, call: Any, stream_id: str) -> None:
        self.stream_id = stream_id
        self.broken = False
        self._call = call
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._keys = itertools.count(1)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        queues = self._queues
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    return
                for entry in message.entries:
                    queue = queues.get(entry.follow_key)
                    if queue is not None:  # else a call that has hung up
                        queue.put_nowait(entry.events)
        except grpc.aio.AioRpcError as error:
            log.info("event stream %s ended: %s", self.stream_id[:6], error.code().name)
        finally:
            self.broken = True
            for queue in queues.values():
                queue.put_nowait(_BROKEN)

    def close(self) -> None:
        self._call.cancel()

    async def events(self, call_with: CallWith, after_seq: int | None) -> AsyncGenerator[Any, None]:
        """The items of one call routed through this stream: AttachRun's (`after_seq` not
        None) `RunInfo`, then the run's events until `run_end`. Raises the call's
        `grpc.aio.AioRpcError`, or `EventStreamBroken`; cancels the call however it ends."""
        key = format(next(self._keys), "x")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[key] = queue
        if self.broken:
            queue.put_nowait(_BROKEN)
        call = call_with(self.stream_id, key)
        watcher: asyncio.Future[None] | None = None
        try:
            if after_seq is not None:
                response = await call.read()
                if response is grpc.aio.EOF or not response.HasField("run"):
                    raise EventStreamBroken("AttachRun ended without its RunInfo")
                yield response.run
                info = response.run
                if info.status != events_pb2.RUN_STATUS_RUNNING and after_seq >= info.last_seq:
                    return
            watcher = asyncio.ensure_future(_watch(call, queue))
            loop = asyncio.get_running_loop()
            deadline: float | None = None
            while True:
                if deadline is None:
                    item = await queue.get()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            item = await queue.get()
                    except TimeoutError:
                        raise EventStreamBroken("run_end did not arrive in time") from None
                if item is _CALL_DONE:
                    deadline = loop.time() + RUN_END_WAIT_S  # OK: its run_end is on the way
                elif item is _BROKEN:
                    raise EventStreamBroken("the event stream ended")
                elif isinstance(item, grpc.aio.AioRpcError):
                    raise item
                else:
                    for event in item:
                        yield event
                        if event.HasField("run_end"):
                            return
                    if not queue.empty():
                        # A burst (a replay, a fast run): let the socket's writer and others
                        # run between entries, as the wait for each message of a call did.
                        await asyncio.sleep(0)
        finally:
            self._queues.pop(key, None)
            call.cancel()
            if watcher is not None:
                watcher.cancel()


async def _watch(call: Any, queue: asyncio.Queue[Any]) -> None:
    """Reads the per-run call to its end: `_CALL_DONE` (OK) or its error into `queue`. Events
    on the call itself (a generator that ignores `event_stream_id`) go to `queue` too."""
    try:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                queue.put_nowait(_CALL_DONE)
                return
            if response.HasField("batch"):
                queue.put_nowait(response.batch.events)
            elif response.HasField("event"):
                queue.put_nowait([response.event])
    except grpc.aio.AioRpcError as error:
        queue.put_nowait(error)


class EventStreams:
    """The event stream of one generator channel, opened on first use and after a break."""

    def __init__(self, stub: generator_pb2_grpc.GeneratorServiceStub, *, open_timeout_s: float):
        self._stub = stub
        self._open_timeout_s = open_timeout_s
        self._current: EventStream | None = None
        self._opening: asyncio.Future[EventStream | None] | None = None
        self._unsupported = False
        self._retry_at = 0.0

    async def get(self) -> EventStream | None:
        """The open stream, or None: go without one (unsupported, or just failed to open)."""
        current = self._current
        if current is not None and not current.broken:
            return current
        if self._unsupported or asyncio.get_running_loop().time() < self._retry_at:
            return None
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._opening)

    async def _open(self) -> EventStream | None:
        call = self._stub.OpenEventStream(generator_pb2.OpenEventStreamRequest())
        try:
            async with asyncio.timeout(self._open_timeout_s):
                first = await call.read()
            if first is grpc.aio.EOF or not first.stream_id:
                raise EventStreamBroken("the event stream ended before its id")
            self._current = EventStream(call, first.stream_id)
            return self._current
        except (grpc.aio.AioRpcError, EventStreamBroken, TimeoutError) as error:
            call.cancel()
            if isinstance(error, grpc.aio.AioRpcError):
                self._unsupported = error.code() == grpc.StatusCode.UNIMPLEMENTED
            log.warning("cannot open an event stream (%r): runs go without one for now", error)
            self._retry_at = asyncio.get_running_loop().time() + REOPEN_AFTER_S
            return None
        finally:
            self._opening = None

    def close(self) -> None:
        """Hangs up the current stream (its calls fail with `EventStreamBroken`)."""
        if self._current is not None:
            self._current.close()
            self._current = None


async def events(call: grpc.aio.UnaryStreamCall) -> AsyncGenerator[Any, None]:
    """The items of a StartRun/AttachRun stream: events, and AttachRun's opening `RunInfo`;
    the call is cancelled however the caller stops reading, so the generator sees the
    follower leave."""
    try:
        async for response in call:
            if response.HasField("event"):
                yield response.event
            elif response.HasField("batch"):  # several events ready together (we ask for it)
                for event in response.batch.events:
                    yield event
            elif isinstance(response, generator_pb2.AttachRunResponse) and response.HasField("run"):
                yield response.run
    except grpc.aio.AioRpcError as error:
        raise error_from_status(error) from error
    finally:
        call.cancel()


EVENT_STREAM_NOT_FOUND = "event_stream_not_found"


async def muxed_events(
    streams: EventStreams, call_with: CallWith, after_seq: int | None
) -> AsyncGenerator[Any, None]:
    """`events` through the channel's event stream; without one when it cannot be opened, or
    when the call reached a generator that does not hold it (several behind one channel)."""
    stream = await streams.get()
    if stream is not None:
        try:
            async for item in stream.events(call_with, after_seq):
                yield item
            return
        except grpc.aio.AioRpcError as error:
            if trailer(error, ERROR_CODE_METADATA) != EVENT_STREAM_NOT_FOUND:
                raise error_from_status(error) from error
        except EventStreamBroken as error:
            raise GeneratorUnavailable("the generator's event stream broke; retry") from error
    async for item in events(call_with("", "")):
        yield item
