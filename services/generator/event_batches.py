"""Events of a run's log in batches: whatever is ready together goes to a follower in one
gRPC message (`RunEventBatch`) instead of one message per event.

At low load every batch holds one event (a follower waits for each); a replay, or a follower
whose event loop fell behind, gets many at once, so the cost per event of a message (a
protobuf wrapper, a `sendmsg`, the poller's wake-up, the edge's read) is paid once per batch
exactly when the process is busiest."""

from __future__ import annotations

from collections.abc import AsyncIterator

from docgen.v1 import events_pb2

from services.generator.runs.log import RunReader

MAX_BATCH_EVENTS = 256
MAX_BATCH_BYTES = 1 << 20
"""A batch stays well under gRPC's 4 MiB default message limit (a summary is the largest
event; a replay of a long run is thousands of events)."""


async def follow_batches(
    log: RunReader, after_seq: int = 0
) -> AsyncIterator[list[events_pb2.RunEvent]]:
    """Every event with `seq > after_seq` in order, as lists of consecutive events; the
    log's own batches when it has them (`MemoryRunLog.follow_batches`), else one per list."""
    batched = getattr(log, "follow_batches", None)
    if batched is None:
        async for event in log.follow(after_seq):
            yield [event]
        return
    async for events in batched(after_seq):
        for batch in split(events):
            yield batch


def split(events: list[events_pb2.RunEvent]) -> list[list[events_pb2.RunEvent]]:
    """`events` cut into batches of at most `MAX_BATCH_EVENTS` and about `MAX_BATCH_BYTES`."""
    if len(events) == 1:
        return [events]
    batches: list[list[events_pb2.RunEvent]] = []
    current: list[events_pb2.RunEvent] = []
    size = 0
    for event in events:
        event_size = event.ByteSize()
        if current and (len(current) >= MAX_BATCH_EVENTS or size + event_size > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(event)
        size += event_size
    if current:
        batches.append(current)
    return batches
