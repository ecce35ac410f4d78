"""Event streams (`OpenEventStream`): one long-lived gRPC stream per caller channel that
carries the events of many runs, so events of different runs ready together cost one message.

A `StartRun`/`AttachRun` naming a stream (`event_stream_id`) does not send its run's events on
its own call: its follower `push`es them here, labelled with the call's `follow_key`, without
waiting for the writer (unless its own run is two lists ahead of it). One writer loop per
stream takes everything pushed since its last write and writes it as one
`EventStreamMessage`; while a write is in flight more accumulates, so
messages grow with load by themselves (no timer, no added latency when idle). A message stays
under `MAX_BATCH_EVENTS` events and about `MAX_BATCH_BYTES` (the rest waits for the next).

When the stream ends (the caller hung up, or the generator stops), every follower pushing into
it stops (`deliver` raises `EventStreamClosed`), so its call fails with UNAVAILABLE and its run
loses a subscriber, as when a per-run call is hung up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from docgen.v1 import events_pb2, generator_pb2

from services.generator.errors import EventStreamClosed, EventStreamNotFound, InvalidRequest
from services.generator.event_batches import MAX_BATCH_BYTES, MAX_BATCH_EVENTS

BACKLOG_BYTES = 8 * MAX_BATCH_BYTES
"""A follower waits (its run log keeps the events) while its stream holds more than this much
unwritten: a caller that reads slowly slows its followers instead of filling our memory."""

Deliver = Callable[[AsyncIterator[list[events_pb2.RunEvent]]], Awaitable[None]]
"""`EventStream.deliver` bound to one call's `follow_key`."""


class EventStream:
    """The outgoing buffer of one event stream; `push` from any follower, `messages` once.
    `interval_s`: least time between two messages (what comes meanwhile goes together)."""

    def __init__(self, stream_id: str, *, interval_s: float = 0.0) -> None:
        self.stream_id = stream_id
        self._interval_s = interval_s
        self._pending: list[tuple[str, list[events_pb2.RunEvent], int]] = []
        self._pending_bytes = 0
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.closed = asyncio.Event()
        self._keys: set[str] = set()
        self._draining = False
        self._pending_per_key: dict[str, int] = {}
        self._taken: asyncio.Future[None] | None = None

    def push(self, key: str, events: list[events_pb2.RunEvent]) -> None:
        """Queues `events` (consecutive events of the call `key`) for the next message."""
        if self.closed.is_set():
            raise EventStreamClosed("the event stream has ended")
        size = sum(event.ByteSize() for event in events)
        self._pending.append((key, events, size))
        self._pending_per_key[key] = self._pending_per_key.get(key, 0) + 1
        self._pending_bytes += size
        if self._pending_bytes > BACKLOG_BYTES:
            self._drained.clear()
        self._ready.set()

    def close(self) -> None:
        self.closed.set()
        self._ready.set()
        self._drained.set()
        self._wake_takers()

    def _wake_takers(self) -> None:
        if self._taken is not None:
            self._taken.set_result(None)
            self._taken = None

    async def _taken_once(self) -> None:
        """Returns after the writer's next take."""
        if self._taken is None:
            self._taken = asyncio.get_running_loop().create_future()
        await self._taken

    async def messages(self) -> AsyncIterator[generator_pb2.EventStreamMessage]:
        """The stream's messages: its id, then whatever was pushed, until `close` (or, after
        `drain`, until no call delivers into it and all it was given is written)."""
        yield generator_pb2.EventStreamMessage(stream_id=self.stream_id)
        loop = asyncio.get_running_loop()
        last_take = -math.inf
        while True:
            await self._ready.wait()
            # Paced: a message per interval at most, so under load each carries every event
            # that came meanwhile, and the edge and we pay per message (a gRPC write, a
            # wake-up of each process) far less often than per event. A stream that was quiet
            # for the interval writes at once: a lone event is not delayed.
            wait_s = last_take + self._interval_s - loop.time()
            if wait_s > 0 and not self.closed.is_set():
                await asyncio.sleep(wait_s)
            if self.closed.is_set():
                return
            if self._pending:
                last_take = loop.time()
                yield self._take()
                continue
            self._ready.clear()
            if self._draining and not self._keys:
                return

    def drain(self) -> None:
        """Ends the stream once its calls have ended and what they pushed is written."""
        self._draining = True
        self._ready.set()

    def _take(self) -> generator_pb2.EventStreamMessage:
        """Takes the pending entries that fit in one message (at least one)."""
        message = generator_pb2.EventStreamMessage()
        count = size = taken = 0
        for key, events, batch_size in self._pending:
            if taken and (
                count + len(events) > MAX_BATCH_EVENTS or size + batch_size > MAX_BATCH_BYTES
            ):
                break
            message.entries.add(follow_key=key, events=events)
            left = self._pending_per_key[key] - 1
            if left:
                self._pending_per_key[key] = left
            else:
                del self._pending_per_key[key]
            count += len(events)
            size += batch_size
            taken += 1
        del self._pending[:taken]
        self._pending_bytes = self._pending_bytes - size if self._pending else 0
        if not self._pending:
            self._ready.clear()
        if self._pending_bytes <= BACKLOG_BYTES:
            self._drained.set()
        self._wake_takers()
        return message

    async def deliver(self, key: str, batches: AsyncIterator[list[events_pb2.RunEvent]]) -> None:
        """Pushes every list of `batches` under `key` until they end. Raises
        `EventStreamClosed` if the stream ends first, and any error of `batches`; `batches`
        is closed however this ends (its caller cancelled too)."""
        if key in self._keys:
            raise InvalidRequest("follow_key is already in use on this event stream")
        self._keys.add(key)
        pump = asyncio.ensure_future(self._pump(key, batches))
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait((pump, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._keys.discard(key)
            if self._draining and not self._keys:
                self._ready.set()
            closed.cancel()
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        if pump.cancelled():
            raise EventStreamClosed("the event stream has ended")
        pump.result()

    async def _pump(self, key: str, batches: AsyncIterator[list[events_pb2.RunEvent]]) -> None:
        async with contextlib.aclosing(batches):  # type: ignore[type-var]
            async for events in batches:
                self.push(key, events)
                # One run's events wait in the buffer at most two entries deep: a run that
                # outpaces the writer (a replay, a fast LLM) waits for it, as it waited for
                # each write on its own call, and its next list grows meanwhile.
                while self._pending_per_key.get(key, 0) > 1 and not self.closed.is_set():
                    await self._taken_once()
                if not self._drained.is_set():
                    await self._drained.wait()


class EventStreams:
    """This generator's open event streams, by id; `interval_s` paces each stream's messages
    (`DOCGEN_EVENT_STREAM_INTERVAL_MS`)."""

    def __init__(self, *, interval_s: float = 0.0) -> None:
        self._streams: dict[str, EventStream] = {}
        self._interval_s = interval_s

    async def serve(self) -> AsyncIterator[generator_pb2.EventStreamMessage]:
        """One `OpenEventStream` call: a new stream's messages until the caller hangs up."""
        stream = EventStream(secrets.token_urlsafe(24), interval_s=self._interval_s)
        self._streams[stream.stream_id] = stream
        try:
            async for message in stream.messages():
                yield message
        finally:
            del self._streams[stream.stream_id]
            stream.close()

    def find(self, stream_id: str, follow_key: str) -> Deliver | None:
        """How a request's follower delivers to the stream it names (None: it names none);
        raises `EventStreamNotFound` for an unknown id, `InvalidRequest` without a key."""
        if not stream_id:
            return None
        stream = self._streams.get(stream_id)
        if stream is None:
            raise EventStreamNotFound("no such event stream on this generator; open one")
        if not follow_key:
            raise InvalidRequest("follow_key is required with event_stream_id")
        return functools.partial(stream.deliver, follow_key)

    def __len__(self) -> int:
        return len(self._streams)

    def drain(self) -> None:
        """Each open stream ends once no call delivers into it (the generator is stopping:
        without this its callers' streams would hold `server.stop` for the whole grace)."""
        for stream in self._streams.values():
            stream.drain()

    def close_all(self) -> None:
        """Ends every open stream (their callers see them end, their followers fail)."""
        for stream in list(self._streams.values()):
            stream.close()
