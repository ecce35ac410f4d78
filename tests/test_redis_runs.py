"""The Redis run store on its own: a writer that lost its lease is refused and stops, a retried
batch is not stored twice, and a takeover resumes at the interrupted section."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from docgen.v1 import events_pb2, outline_pb2
from redis.exceptions import ResponseError

from services.generator.errors import CursorOutOfRange
from services.generator.runs.store.port import AdoptedRun
from services.generator.runs.store.redis.keys import events_key, lease_key
from services.generator.runs.store.redis.log import RedisRunLog
from services.generator.runs.store.redis.store import RedisRunStore
from tests.support.redis_server import RedisServer

OUTLINE = outline_pb2.Outline(
    document_id="d",
    title="T",
    sections=[
        outline_pb2.OutlineSection(id="a", title="A", target_tokens=10),
        outline_pb2.OutlineSection(id="b", title="B", target_tokens=10),
    ],
)


@dataclass
class RecordingOwner:
    adopted: list[AdoptedRun] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    def adopt(self, run: AdoptedRun) -> None:
        self.adopted.append(run)

    def cancel_local(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    def abandon(self, run_id: str, *, reason: str) -> None:
        self.abandoned.append(run_id)


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisRunStore, RedisRunStore]]:
    """Two generators' stores; long leases, so their background loops stay out of the way."""
    redis_server.flush()
    pair = tuple(
        RedisRunStore(redis_server.url, lease_s=60, retry_s=1, run_ttl_s=60, run_grace_s=60)
        for _ in range(2)
    )
    yield pair  # type: ignore[misc]
    for store in pair:
        await store.close()
        await store.disconnect()


async def stored_events(store: RedisRunStore, run_id: str) -> list[events_pb2.RunEvent]:
    entries = await store.redis.xrange(events_key(run_id), "-", "+")
    return [events_pb2.RunEvent.FromString(fields[b"e"]) for _id, fields in entries]


def start_section(run_log: RedisRunLog, index: int, attempt: int) -> None:
    section = OUTLINE.sections[index]
    run_log.append(
        section_start=events_pb2.SectionStart(
            section_id=section.id, index=index, title=section.title, attempt=attempt
        )
    )


async def test_takeover_fences_the_stale_writer(
    stores: tuple[RedisRunStore, RedisRunStore],
) -> None:
    first, second = stores
    first_owner, second_owner = RecordingOwner(), RecordingOwner()
    await first.open(first_owner)
    await second.open(second_owner)
    stale = await first.create("run_x", user_id="u", outline=OUTLINE, request_id="r", trace_id="t")
    assert isinstance(stale, RedisRunLog)
    stale.append(run_started=events_pb2.RunStarted(document_id="d", section_ids=["a", "b"]))
    start_section(stale, 0, 1)
    stale.append(section_chunk=events_pb2.SectionChunk(section_id="a", index=0, delta="Hel"))
    await stale.aclose()

    # The writer stalls past its lease (a GC pause, a partition): the key lapses.
    await first.redis.delete(lease_key("run_x"))
    assert await second.take_over_orphans() == 1
    adopted = second_owner.adopted[0]
    assert adopted.resume is not None
    assert (adopted.resume.next_index, adopted.resume.next_attempt) == (0, 2)
    assert adopted.log.last_seq == 3
    new = adopted.log
    assert isinstance(new, RedisRunLog)
    start_section(new, 0, 2)
    await new.aclose()

    # The stale writer wakes up and appends: refused, and it stops at once.
    stale.append(section_chunk=events_pb2.SectionChunk(section_id="a", index=0, delta="lo"))
    await stale.aclose()
    assert stale.lost and first_owner.abandoned == ["run_x"]
    stale.append(section_chunk=events_pb2.SectionChunk(section_id="a", index=0, delta="!"))
    await stale.aclose()
    events = await stored_events(first, "run_x")
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert events[-1].section_start.attempt == 2
    # Nobody else takes it while the new writer holds the lease.
    assert await first.take_over_orphans() == 0


async def test_a_retried_batch_is_stored_once_and_an_overlap_is_refused(
    stores: tuple[RedisRunStore, RedisRunStore],
) -> None:
    store, _ = stores
    await store.open(RecordingOwner())
    run_log = await store.create("run_y", user_id="u", outline=OUTLINE, request_id="", trace_id="t")
    assert isinstance(run_log, RedisRunLog)

    def event(seq: int, delta: str = "") -> bytes:
        return events_pb2.RunEvent(
            run_id="run_y", seq=seq, section_chunk=events_pb2.SectionChunk(delta=delta or str(seq))
        ).SerializeToString()

    batch = [event(1), event(2)]
    await store.store_batch(run_log, 1, batch, {}, "")
    await store.store_batch(run_log, 1, batch, {}, "")  # its reply was lost: sent again
    assert [e.seq for e in await stored_events(store, "run_y")] == [1, 2]
    # Lost reply, and the writer queued more meanwhile: the retry is longer. Seen once in a
    # whole-suite run (a Redis killed between storing a batch and replying): the refused
    # retry handed the run over and restarted its section.
    await store.store_batch(run_log, 1, [*batch, event(3), event(4)], {}, "")
    stored = await stored_events(store, "run_y")
    assert [(e.seq, e.section_chunk.delta) for e in stored] == [
        (1, "1"),
        (2, "2"),
        (3, "3"),
        (4, "4"),
    ]
    # An overlap that is not the same events is refused, and nothing of it is written.
    with pytest.raises(ResponseError, match="differs"):
        await store.store_batch(run_log, 4, [event(4, "other"), event(5)], {}, "")
    with pytest.raises(ResponseError, match="past this batch"):
        await store.store_batch(run_log, 2, [event(2), event(3)], {}, "")
    assert [e.seq for e in await stored_events(store, "run_y")] == [1, 2, 3, 4]


async def test_follow_replays_then_reports_cursors_past_the_log(
    stores: tuple[RedisRunStore, RedisRunStore],
) -> None:
    writer_store, reader_store = stores
    await writer_store.open(RecordingOwner())
    run_log = await writer_store.create(
        "run_z", user_id="u", outline=OUTLINE, request_id="", trace_id="t"
    )
    run_log.append(run_started=events_pb2.RunStarted(document_id="d"))
    run_log.append(run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_COMPLETED))
    await run_log.aclose()
    stored = await reader_store.lookup("run_z")
    assert stored is not None and stored.user_id == "u" and stored.log.closed
    assert [e.seq async for e in stored.log.follow(1)] == [2]
    with pytest.raises(CursorOutOfRange):
        async for _ in stored.log.follow(3):
            pass
    assert await reader_store.redis.hget("docgen:run:{run_z}", "status") == b"completed"
    assert await reader_store.redis.ttl(events_key("run_z")) <= 60
