"""`MemoryRunLog`: events stored serialized (not objects the garbage collector walks), read
back whole and in order from any cursor, live followers served the writer's own messages."""

from __future__ import annotations

import asyncio
import gc

import pytest
from docgen.v1 import events_pb2

from services.generator.errors import CursorOutOfRange
from services.generator.runs.log import _RECENT_OBJECTS, MemoryRunLog

CHUNKS = _RECENT_OBJECTS * 2 + 7  # more than the log keeps as objects


def filled_log() -> MemoryRunLog:
    log = MemoryRunLog("run_m")
    for index in range(CHUNKS):
        log.append(section_chunk=events_pb2.SectionChunk(section_id="s", delta=f"d{index}"))
    log.append(run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_COMPLETED))
    return log


async def read(log: MemoryRunLog, after_seq: int) -> list[events_pb2.RunEvent]:
    return [event async for event in log.follow(after_seq)]


@pytest.mark.parametrize("after_seq", [0, 1, CHUNKS - _RECENT_OBJECTS - 1, CHUNKS - 3, CHUNKS])
async def test_every_event_after_any_cursor_whole_and_in_order(after_seq: int) -> None:
    events = await read(filled_log(), after_seq)
    assert [e.seq for e in events] == list(range(after_seq + 1, CHUNKS + 2))
    assert [e.section_chunk.delta for e in events[:-1]] == [
        f"d{index}" for index in range(after_seq, CHUNKS)
    ]
    assert events[-1].HasField("run_end") and all(e.run_id == "run_m" for e in events)


async def test_stored_events_are_not_tracked_by_the_garbage_collector() -> None:
    log = filled_log()
    assert len(log._events) == CHUNKS + 1
    assert not any(gc.is_tracked(data) for data in log._events)
    assert (await log.last_event()) is not None and (await log.last_event()).HasField("run_end")


async def test_a_live_follower_gets_the_writers_messages_as_they_come() -> None:
    log = MemoryRunLog("run_live")
    batches = log.follow_batches(0)
    first = log.append(section_chunk=events_pb2.SectionChunk(section_id="s", delta="a"))
    assert await anext(batches) == [first]
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0)
    second = log.append(section_chunk=events_pb2.SectionChunk(section_id="s", delta="b"))
    third = log.append(run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_COMPLETED))
    batch = await waiting
    assert batch == [second, third] and batch[0] is second  # the same message, not a copy
    assert await anext(batches, None) is None


async def test_a_cursor_past_the_log_is_refused() -> None:
    with pytest.raises(CursorOutOfRange):
        await read(filled_log(), CHUNKS + 2)
