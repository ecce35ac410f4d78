"""`RedisRunStore`: the run store on Redis Streams (layout in `__init__.py`). Creates and stores
the runs this generator writes, finds runs any generator writes, and counts followers for the
writers' grace checks; leases and takeover (`leases.py`) and cancels (`cancels.py`) are its
other halves."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from docgen.v1 import events_pb2, outline_pb2
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from services.generator.runs.log import RUNNING, RunWriter
from services.generator.runs.store.port import RunOwner, StoredRun
from services.generator.runs.store.redis.cancels import CancelRelay
from services.generator.runs.store.redis.keys import (
    ACTIVE_RUNS_KEY,
    APPEND_SCRIPT,
    CANCEL_SCRIPT,
    ORPHAN_TTL_S,
    RELEASE_SCRIPT,
    RENEW_SCRIPT,
    RESERVE_USER_RUN_SCRIPT,
    TRANSIENT,
    LeaseLost,
    events_key,
    followed_key,
    lease_key,
    meta_key,
    unavailable,
    user_runs_key,
)
from services.generator.runs.store.redis.leases import LeaseKeeping
from services.generator.runs.store.redis.log import RedisRunLog
from services.generator.runs.store.redis.reader import RedisRunView, StreamReader

log = logging.getLogger(__name__)


class RedisRunStore(LeaseKeeping, CancelRelay):
    """`RunStore` on Redis; owns the lease heartbeat, the takeover scan and the cancel
    listener of this generator."""

    @property
    def keep_ended_s(self) -> float:
        return 0.0  # Redis keeps an ended run for the TTL; `lookup` finds it there

    @property
    def hands_over_at_shutdown(self) -> bool:
        return True  # another generator takes each run over within a lease

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
        self._reserve_user_run = self.redis.register_script(RESERVE_USER_RUN_SCRIPT)
        self._user_runs: dict[str, str] = {}
        """run id -> user id of the runs whose user slot this generator keeps renewed."""
        self._writing: dict[str, RedisRunLog] = {}
        self._handed_over: list[RedisRunLog] = []
        self._followed: collections.Counter[str] = collections.Counter()
        self._owner: RunOwner | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._reader = StreamReader(self.redis, retry_s=retry_s)

    def _new_token(self) -> str:
        return f"{self.instance}/{secrets.token_hex(4)}"

    def _writer(self, run_id: str, token: str, last_seq: int) -> RedisRunLog:
        return RedisRunLog(self, run_id, token=token, last_seq=last_seq)

    def follow(self, run_id: str, after_seq: int) -> AsyncIterator[events_pb2.RunEvent]:
        return self._reader.follow(run_id, after_seq)

    def follow_batches(
        self, run_id: str, after_seq: int
    ) -> AsyncIterator[list[events_pb2.RunEvent]]:
        return self._reader.follow_batches(run_id, after_seq)

    async def reserve_user_run(self, user_id: str, run_id: str, limit: int) -> bool:
        """Takes one of `user_id`'s `limit` slots for `run_id`, across every generator sharing
        this Redis (atomic: a Lua script); False when all are taken."""
        try:
            taken = await self._reserve_user_run(
                keys=[user_runs_key(user_id)], args=[int(self.lease_s * 1000), limit, run_id]
            )
        except TRANSIENT as error:
            raise unavailable(error) from None
        if taken:
            self._user_runs[run_id] = user_id
        return bool(taken)

    def keep_user_run(self, user_id: str, run_id: str) -> None:
        """A run taken over here: its user slot is renewed by this generator from now on."""
        self._user_runs[run_id] = user_id

    async def release_user_run(self, user_id: str, run_id: str) -> None:
        self._user_runs.pop(run_id, None)
        with contextlib.suppress(*TRANSIENT):  # else it lapses with its lease
            await self.redis.zrem(user_runs_key(user_id), run_id)

    async def renew_user_runs(self) -> None:
        """Called by the heartbeat: pushes the expiry of this generator's user slots on."""
        if not self._user_runs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id, user_id in list(self._user_runs.items()):
                await self._reserve_user_run(
                    keys=[user_runs_key(user_id)],
                    args=[int(self.lease_s * 1000), 2**31, run_id],
                    client=pipe,
                )
            await pipe.execute()

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
    ) -> RunWriter:
        token = self._new_token()
        run_log = self._writer(run_id, token, 0)
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
            raise unavailable(error) from error
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
                run_log.token,
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
            raise LeaseLost()

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

    # --- runs written anywhere -------------------------------------------------------------

    async def lookup(self, run_id: str) -> StoredRun | None:
        try:
            user, status = await self.redis.hmget(meta_key(run_id), ["user", "status"])
        except TRANSIENT as error:
            raise unavailable(error) from error
        if user is None:
            return None
        ended = status is not None and status.decode() != RUNNING
        view = RedisRunView(self._reader, run_id, closed=ended)
        return StoredRun(user_id=user.decode(), log=view)

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
