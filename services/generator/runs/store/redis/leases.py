"""Leases of the runs this generator writes, and taking over the runs whose writer died: the
heartbeat renews leases (and follower marks) every third of a lease; the takeover scan, every
half lease, claims each unfinished run whose lease lapsed and hands it to the registry."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from docgen.v1 import events_pb2, outline_pb2, summary_pb2

from services.generator.resume import resume_point
from services.generator.runs.log import RUNNING, status_name
from services.generator.runs.store.port import AdoptedRun, RunOwner
from services.generator.runs.store.redis.keys import (
    ACTIVE_RUNS_KEY,
    ORPHAN_TTL_S,
    TRANSIENT,
    events_key,
    followed_key,
    lease_key,
    meta_key,
)
from services.generator.runs.store.redis.log import RedisRunLog

log = logging.getLogger(__name__)


class LeaseKeeping:
    """The lease half of `RedisRunStore` (a mixin: the state is the store's)."""

    redis: Any
    lease_s: float
    _run_ttl_ms: int
    _followed_ms: int
    _writing: dict[str, RedisRunLog]
    _followed: collections.Counter[str]
    _owner: RunOwner | None
    _renew: Any
    _release: Any

    def _new_token(self) -> str:
        raise NotImplementedError

    def _writer(self, run_id: str, token: str, last_seq: int) -> RedisRunLog:
        raise NotImplementedError

    async def renew_user_runs(self) -> None:
        raise NotImplementedError

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
            with contextlib.suppress(*TRANSIENT):  # retried at the next beat
                await self.renew_user_runs()
            for run_log, result in zip(writing, results, strict=False):
                if run_log.lost or run_log.fenced:
                    continue
                if int(result) < 0:
                    run_log.lose("its lease lapsed")
                elif int(result) == 1 and self._owner is not None:
                    self._owner.cancel_local(run_log.run_id)

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
                        status_name(events[-1].run_end.status),
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
        run_log = self._writer(run_id, token, events[-1].seq if events else 0)
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
