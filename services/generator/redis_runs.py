"""Runs in Redis Streams, shared by every generator: any generator serves a resume or a cancel,
and a run outlives the generator writing it (another one takes it over when its lease lapses).

Keys of one run (`{run_id}` is a cluster hash tag: a run's keys share a slot):

    docgen:run:{id}:events    stream; entry id `0-<seq>`, field `e` = a serialized RunEvent
    docgen:run:{id}           hash: user, status, outline, request_id, trace_id, created_ms,
                              writer (lease token), cancel, summary, summary_through,
                              summary_version
    docgen:run:{id}:lease     the writing generator's token; PX run_lease_s, renewed
    docgen:run:{id}:followed  a non-writing generator has a follower; PX max(grace, lease)
    docgen:runs:active        set of unfinished run ids, scanned for lapsed leases
    docgen:runs:cancel        pub/sub channel: run ids whose user asked to cancel

No event is lost or written twice: appends are a Lua script that checks the caller still holds
the lease and then XADDs with explicit ids `0-<seq>`, which Redis refuses unless they follow the
stream's last one. A writer told that it lost the lease stops at once; its unstored events are
dropped (nobody saw them) and the new writer restarts the section that was being written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from docgen.v1 import events_pb2, outline_pb2, summary_pb2
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.generator.errors import CursorOutOfRange, RunLogUnavailable, RunLost
from services.generator.resume import resume_point
from services.generator.runlog import RunEventLog
from services.generator.runstore import AdoptedRun, RunOwner, StoredRun

log = logging.getLogger(__name__)

ACTIVE_RUNS_KEY = "docgen:runs:active"
CANCEL_CHANNEL = "docgen:runs:cancel"
RUNNING = "running"
STATUS_NAMES = {
    events_pb2.RUN_STATUS_COMPLETED: "completed",
    events_pb2.RUN_STATUS_FAILED: "failed",
    events_pb2.RUN_STATUS_CANCELLED: "cancelled",
}
# While a run is going its keys expire this long after the last write or lease renewal: only
# a run that no generator could take over for an hour (all of them gone) disappears this way.
ORPHAN_TTL_S = 3600
# Events sent to Redis per append script; a backlog (Redis was slow) goes in several.
APPEND_BATCH = 256
READ_PAGE = 512
# A blocked XREAD wakes up this often to check that the run still exists.
FOLLOW_BLOCK_MS = 1000
# Errors that mean "Redis is unreachable right now", retried for `retry_s`.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

T = TypeVar("T")

# KEYS: events, meta, lease, active set. ARGV: token, run id, first seq, n, n payloads,
# m, m field/value pairs of state, final status ('' while running), ttl ms, orphan ttl ms.
# Returns the last stored seq, or -1 when the caller does not hold the lease. A batch whose
# last event is already the stream's last one is a retry of a batch that was stored (its reply
# was lost): nothing is written twice. Any other overlap fails in XADD before writing anything.
APPEND_SCRIPT = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local first = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local top_seq = 0
if top[1] then top_seq = tonumber(string.match(top[1][1], '%-(%d+)$')) end
if top_seq == first + n - 1 then return top_seq end
for i = 1, n do
  redis.call('XADD', KEYS[1], '0-' .. (first + i - 1), 'e', ARGV[4 + i])
end
local k = 5 + n
local m = tonumber(ARGV[k])
for j = 1, m do
  redis.call('HSET', KEYS[2], ARGV[k + 2 * j - 1], ARGV[k + 2 * j])
end
k = k + 2 * m + 1
if ARGV[k] ~= '' then
  redis.call('HSET', KEYS[2], 'status', ARGV[k])
  redis.call('PEXPIRE', KEYS[1], ARGV[k + 1])
  redis.call('PEXPIRE', KEYS[2], ARGV[k + 1])
  redis.call('SREM', KEYS[4], ARGV[2])
  redis.call('DEL', KEYS[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[k + 2])
  redis.call('PEXPIRE', KEYS[2], ARGV[k + 2])
end
return first + n - 1
"""

# KEYS: lease, meta, events. ARGV: token, lease ms, orphan ttl ms.
# Returns -1: the lease is lost; 1: held, and the run's user asked to cancel it; 0: held.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if redis.call('HGET', KEYS[2], 'cancel') == '1' then return 1 end
return 0
"""

# KEYS: lease. ARGV: token. Deletes the lease only if it is still the caller's.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: meta. ARGV: channel, run id. Marks the run cancelled (if it still exists) and tells
# its writer at once.
CANCEL_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'cancel', '1') end
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""


def events_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}:events"


def meta_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}"


def lease_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}:lease"


def followed_key(run_id: str) -> str:
    return f"docgen:run:{{{run_id}}}:followed"


def entry_id(seq: int) -> str:
    return f"0-{seq}"


def seq_of(entry: bytes | str) -> int:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.rsplit("-", 1)[1])


class _LeaseLost(Exception):
    pass


class RedisRunLog:
    """One run's stream. The writer's instance (with a lease token) queues appends and stores
    them in order from a background task, so `append` stays synchronous for `RunExecution`;
    every instance can follow the stream."""

    def __init__(
        self,
        store: RedisRunStore,
        run_id: str,
        *,
        token: str | None = None,
        last_seq: int = 0,
        closed: bool = False,
    ) -> None:
        self.run_id = run_id
        self.token = token
        self._store = store
        self._next_seq = last_seq + 1
        self._stored_seq = last_seq
        self._closed = closed
        self._final_status = ""
        self._pending: list[bytes] = []
        self._state: dict[str, str | bytes | int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.fenced = False
        """Set when the run is handed over or the lease is lost: appends are dropped."""
        self.lost = False
        """Set when the lease was lost: queued events are dropped too."""
        self.end_stored = False
        """Set once `run_end` is stored (the script also did the end-of-run bookkeeping)."""

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def handed_over(self) -> bool:
        return self.fenced

    def append(self, **payload: Any) -> events_pb2.RunEvent:
        if self._closed:
            raise RuntimeError(f"run {self.run_id} has ended; its log is closed")
        event = events_pb2.RunEvent(
            run_id=self.run_id,
            seq=self._next_seq,
            ts_unix_ms=time.time_ns() // 1_000_000,
            **payload,
        )
        self._next_seq += 1
        if "run_end" in payload:
            self._closed = True
            self._final_status = STATUS_NAMES.get(payload["run_end"].status, "failed")
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

    def follow(self, after_seq: int = 0) -> AsyncIterator[events_pb2.RunEvent]:
        return self._store.follow(self.run_id, after_seq)

    # --- storing ---------------------------------------------------------------------------

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
            final = self._final_status if whole and self._closed else ""
            try:
                await self._store.store_batch(self, self._stored_seq + 1, events, state, final)
            except _LeaseLost:
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


class RedisRunStore:
    """`RunStore` on Redis; owns the lease heartbeat, the takeover scan and the cancel
    listener of this generator."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        lease_s: float,
        retry_s: float,
        run_ttl_s: float,
        run_grace_s: float,
    ) -> None:
        self.lease_s = lease_s
        self.retry_s = retry_s
        self._run_ttl_ms = max(1, int(run_ttl_s * 1000))
        self._grace_ms = max(1, int(run_grace_s * 1000))
        # A follower mark outlives the renewals between (a third of a lease apart), so a run
        # followed elsewhere never looks unfollowed between two of them.
        self._followed_ms = max(self._grace_ms, int(lease_s * 1000))
        # Short client-side retries ride over a blip; longer outages are ours to handle.
        # Typed Any: the replies are RESP2 shapes parsed below, not redis-py's unions.
        self.redis: Any = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
            protocol=2,  # the reply shapes below are RESP2's
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        )
        # Who writes a run, for operators (and tests): host/pid/random, unique per lease taken.
        self.instance = f"{socket.gethostname()}/{os.getpid()}"
        self._append = self.redis.register_script(APPEND_SCRIPT)
        self._renew = self.redis.register_script(RENEW_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)
        self._cancel = self.redis.register_script(CANCEL_SCRIPT)
        self._writing: dict[str, RedisRunLog] = {}
        self._handed_over: list[RedisRunLog] = []
        self._followed: collections.Counter[str] = collections.Counter()
        self._owner: RunOwner | None = None
        self._loops: list[asyncio.Task[None]] = []

    def _new_token(self) -> str:
        return f"{self.instance}/{secrets.token_hex(4)}"

    async def open(self, owner: RunOwner) -> None:
        self._owner = owner
        try:
            await self.redis.ping()
        except TRANSIENT as error:
            log.warning("run log store unreachable at start; retrying in the background: %r", error)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="runlog-heartbeat"),
            asyncio.create_task(self._takeover_loop(), name="runlog-takeover"),
            asyncio.create_task(self._cancel_loop(), name="runlog-cancels"),
        ]

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        # Whatever this generator still writes is handed over: stored as far as it got, then
        # its lease released so another generator takes it over at its next scan.
        for run_log in [*self._writing.values(), *self._handed_over]:
            run_log.fence()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run_log.aclose(), self.retry_s)
            if not run_log.lost and not run_log.end_stored and run_log.token:
                with contextlib.suppress(Exception):
                    await self._release(keys=[lease_key(run_log.run_id)], args=[run_log.token])
        self._writing.clear()

    async def disconnect(self) -> None:
        await self.redis.aclose()

    # --- runs written here -----------------------------------------------------------------

    async def create(
        self,
        run_id: str,
        *,
        user_id: str,
        outline: outline_pb2.Outline,
        request_id: str,
        trace_id: str,
    ) -> RunEventLog:
        token = self._new_token()
        run_log = RedisRunLog(self, run_id, token=token)
        self._writing[run_id] = run_log
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(lease_key(run_id), token, nx=True, px=int(self.lease_s * 1000))
                pipe.hset(
                    meta_key(run_id),
                    mapping={
                        "user": user_id,
                        "status": RUNNING,
                        "outline": outline.SerializeToString(),
                        "request_id": request_id,
                        "trace_id": trace_id,
                        "created_ms": time.time_ns() // 1_000_000,
                        "writer": token,
                    },
                )
                pipe.pexpire(meta_key(run_id), ORPHAN_TTL_S * 1000)
                pipe.sadd(ACTIVE_RUNS_KEY, run_id)
                await pipe.execute()
        except TRANSIENT as error:
            self._writing.pop(run_id, None)
            raise RunLogUnavailable(
                f"the run store is unreachable ({type(error).__name__}); retry shortly"
            ) from error
        return run_log

    async def store_batch(
        self,
        run_log: RedisRunLog,
        first_seq: int,
        events: list[bytes],
        state: dict[str, str | bytes | int],
        final_status: str,
    ) -> None:
        run_id = run_log.run_id
        pairs: list[str | bytes | int] = []
        for name, value in state.items():
            pairs += [name, value]
        result = await self._append(
            keys=[events_key(run_id), meta_key(run_id), lease_key(run_id), ACTIVE_RUNS_KEY],
            args=[
                run_log.token or "",
                run_id,
                first_seq,
                len(events),
                *events,
                len(state),
                *pairs,
                final_status,
                self._run_ttl_ms,
                ORPHAN_TTL_S * 1000,
            ],
        )
        if int(result) < 0:
            raise _LeaseLost()

    def forget(self, run_log: RedisRunLog) -> None:
        """The run ended and its run_end is stored: nothing more to renew."""
        if self._writing.get(run_log.run_id) is run_log:
            del self._writing[run_log.run_id]

    def lost(self, run_log: RedisRunLog, reason: str) -> None:
        if self._writing.get(run_log.run_id) is run_log:
            del self._writing[run_log.run_id]
        log.warning("run handed over: %s", reason, extra={"run_id": run_log.run_id})
        if self._owner is not None:
            self._owner.abandon(run_log.run_id, reason=reason)

    def fence(self, run_id: str) -> None:
        run_log = self._writing.pop(run_id, None)
        if run_log is not None:
            run_log.fence()
            self._handed_over.append(run_log)

    async def _heartbeat_loop(self) -> None:
        """Renews this generator's leases and follower marks; notices lost leases and cancels
        whose pub/sub message was missed."""
        interval_s = self.lease_s / 3
        while True:
            await asyncio.sleep(interval_s)
            writing = [run_log for run_log in self._writing.values() if not run_log.lost]
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for run_log in writing:
                        await self._renew(
                            keys=[
                                lease_key(run_log.run_id),
                                meta_key(run_log.run_id),
                                events_key(run_log.run_id),
                            ],
                            args=[
                                run_log.token or "",
                                int(self.lease_s * 1000),
                                ORPHAN_TTL_S * 1000,
                            ],
                            client=pipe,
                        )
                    for run_id in list(self._followed):
                        if run_id not in self._writing:  # the writer counts its own
                            pipe.set(followed_key(run_id), 1, px=self._followed_ms)
                    results = await pipe.execute()
            except TRANSIENT as error:
                log.warning("lease renewal failed: %r", error)
                continue
            for run_log, result in zip(writing, results, strict=False):
                if run_log.lost or run_log.fenced:
                    continue
                if int(result) < 0:
                    run_log.lose("its lease lapsed")
                elif int(result) == 1 and self._owner is not None:
                    self._owner.cancel_local(run_log.run_id)

    # --- takeover --------------------------------------------------------------------------

    async def _takeover_loop(self) -> None:
        interval_s = self.lease_s / 2
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.take_over_orphans()
            except TRANSIENT as error:
                log.warning("takeover scan failed: %r", error)
            except Exception:
                log.exception("takeover scan failed")

    async def take_over_orphans(self) -> int:
        """Takes over every unfinished run whose writer's lease lapsed; returns how many."""
        candidates = [
            run_id.decode()
            for run_id in await self.redis.smembers(ACTIVE_RUNS_KEY)
            if run_id.decode() not in self._writing
        ]
        if not candidates:
            return 0
        tokens = {run_id: self._new_token() for run_id in candidates}
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in candidates:
                pipe.set(lease_key(run_id), tokens[run_id], nx=True, px=int(self.lease_s * 1000))
            acquired = await pipe.execute()
        taken = 0
        for run_id, ok in zip(candidates, acquired, strict=True):
            if ok:
                taken += await self._take_over(run_id, tokens[run_id])
        return taken

    async def _take_over(self, run_id: str, token: str) -> int:
        meta = await self.redis.hgetall(meta_key(run_id))
        if not meta or b"outline" not in meta:  # expired, or the store lost it
            await self.redis.srem(ACTIVE_RUNS_KEY, run_id)
            await self._release(keys=[lease_key(run_id)], args=[token])
            return 0
        events = [
            events_pb2.RunEvent.FromString(fields[b"e"])
            for _entry, fields in await self.redis.xrange(events_key(run_id), "-", "+")
        ]
        if (events and events[-1].HasField("run_end")) or meta.get(
            b"status", b""
        ).decode() != RUNNING:
            # It ended; its writer died before the bookkeeping (or the script ran halfway).
            async with self.redis.pipeline(transaction=True) as pipe:
                if events and events[-1].HasField("run_end"):
                    pipe.hset(
                        meta_key(run_id),
                        "status",
                        STATUS_NAMES.get(events[-1].run_end.status, "failed"),
                    )
                pipe.pexpire(meta_key(run_id), self._run_ttl_ms)
                pipe.pexpire(events_key(run_id), self._run_ttl_ms)
                pipe.srem(ACTIVE_RUNS_KEY, run_id)
                pipe.delete(lease_key(run_id))
                await pipe.execute()
            return 0
        outline = outline_pb2.Outline.FromString(meta[b"outline"])
        resume = None
        if events:
            created_ms = int(meta.get(b"created_ms", b"0"))
            resume = resume_point(
                outline,
                events,
                summary=summary_pb2.GlobalSummary.FromString(meta.get(b"summary", b"")),
                summary_through=int(meta.get(b"summary_through", b"-1")),
                summary_version=int(meta.get(b"summary_version", b"0")),
                elapsed_s=max(0.0, time.time() - created_ms / 1000) if created_ms else 0.0,
            )
        await self.redis.hset(meta_key(run_id), "writer", token)
        run_log = RedisRunLog(self, run_id, token=token, last_seq=events[-1].seq if events else 0)
        self._writing[run_id] = run_log
        assert self._owner is not None
        self._owner.adopt(
            AdoptedRun(
                run_id=run_id,
                user_id=meta[b"user"].decode(),
                outline=outline,
                request_id=meta.get(b"request_id", b"").decode(),
                trace_id=meta.get(b"trace_id", b"").decode() or None,
                log=run_log,
                resume=resume,
                cancel_requested=meta.get(b"cancel") == b"1",
            )
        )
        return 1

    # --- runs written anywhere -------------------------------------------------------------

    async def lookup(self, run_id: str) -> StoredRun | None:
        try:
            user, status = await self.redis.hmget(meta_key(run_id), ["user", "status"])
        except TRANSIENT as error:
            raise RunLogUnavailable(
                f"the run store is unreachable ({type(error).__name__}); retry shortly"
            ) from error
        if user is None:
            return None
        ended = status is not None and status.decode() != RUNNING
        return StoredRun(user_id=user.decode(), log=RedisRunLog(self, run_id, closed=ended))

    async def request_cancel(self, run_id: str) -> None:
        try:
            await self._cancel(keys=[meta_key(run_id)], args=[CANCEL_CHANNEL, run_id])
        except TRANSIENT as error:
            raise RunLogUnavailable(
                f"the run store is unreachable ({type(error).__name__}); retry shortly"
            ) from error

    async def _cancel_loop(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CANCEL_CHANNEL)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    run_id = message["data"].decode()
                    if run_id in self._writing and self._owner is not None:
                        self._owner.cancel_local(run_id)
            except TRANSIENT as error:
                # The heartbeat still reads the cancel flag, so a cancel sent meanwhile is
                # acted on within a third of the lease.
                log.warning("cancel channel lost; resubscribing: %r", error)
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def watch(self, run_id: str) -> None:
        """Marks the run followed for its writer's grace check, if another generator writes
        it (the writer counts its own followers exactly)."""
        self._followed[run_id] += 1
        if run_id not in self._writing:
            with contextlib.suppress(*TRANSIENT):
                await self.redis.set(followed_key(run_id), 1, px=self._followed_ms)

    def unwatch(self, run_id: str) -> None:
        self._followed[run_id] -= 1
        if self._followed[run_id] <= 0:
            del self._followed[run_id]

    async def followed_for(self, run_id: str) -> float:
        try:
            remaining_ms = await self.redis.pttl(followed_key(run_id))
        except TRANSIENT:
            return self._grace_ms / 1000  # unknown: cancel nothing on a guess
        return max(0, int(remaining_ms)) / 1000

    # --- following -------------------------------------------------------------------------

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
        key = events_key(run_id)
        top = await self._retrying(lambda: self.redis.xrevrange(key, "+", "-", count=1))
        last_seq = seq_of(top[0][0]) if top else 0
        if after_seq < 0 or after_seq > last_seq:
            raise CursorOutOfRange(after_seq=after_seq, last_seq=last_seq)
        position = after_seq
        while position < last_seq:
            start = entry_id(position + 1)
            page = await self._retrying(
                functools.partial(self.redis.xrange, key, start, "+", count=READ_PAGE)
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
                    self.redis.xread, {key: cursor}, count=READ_PAGE, block=FOLLOW_BLOCK_MS
                )
            )
            if not response:
                if not await self._retrying(lambda: self.redis.exists(meta_key(run_id))):
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
