"""Every run the generator owns: start, find (per user), cancel, subscriber accounting with
a grace period, and expiry after the TTL. Through its store (`store/port.py`) also runs other
generators write: found, followed and cancelled there, and taken over when their writer dies.
Where stores differ, the registry asks its store what to do; it never asks which store it has."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from docgen.v1 import events_pb2, outline_pb2

from services.common import metrics
from services.common.logs import hash_user, set_log_context
from services.common.tracing import new_trace_id
from services.generator.chunk_coalescing import MAX_CHUNK_INTERVAL_MS, coalescing
from services.generator.errors import InvalidRequest, RunLogUnavailable, RunNotFound
from services.generator.execution import RunExecution
from services.generator.outline import validate_outline
from services.generator.resume import ResumePoint
from services.generator.runs.log import RunReader, RunWriter
from services.generator.runs.slots import RunSlots
from services.generator.runs.store.memory import MemoryRunStore
from services.generator.runs.store.port import AdoptedRun, RunStore
from services.generator.section_writer import SectionWriter
from services.generator.settings import GeneratorSettings
from services.generator.summary_step import SummaryUpdater

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Run:
    run_id: str
    user_id: str
    log: RunReader
    """The run's writer (a `RunWriter`) when `task` writes it here."""
    task: asyncio.Task[None] | None = None
    """None for a run another generator writes (found through a shared store)."""
    subscribers: int = 0
    grace_timer: asyncio.TimerHandle | None = None
    cancel_requested: bool = field(default=False)

    @property
    def ended(self) -> bool:
        return self.log.closed


class RunRegistry:
    def __init__(
        self,
        *,
        writer: SectionWriter,
        summaries: SummaryUpdater,
        settings: GeneratorSettings,
        # The prefix keeps ids from starting with "-" (command lines read that as an option).
        new_run_id: Callable[[], str] = lambda: "run_" + secrets.token_urlsafe(16),
        store: RunStore | None = None,
    ) -> None:
        self._writer = writer
        self._summaries = summaries
        self._settings = settings
        self._new_run_id = new_run_id
        self._store: RunStore = store or MemoryRunStore(run_ttl_s=settings.run_ttl_s)
        self._runs: dict[str, Run] = {}
        self._slots = RunSlots(settings, self._store)
        self._checks: set[asyncio.Task[None]] = set()
        self._on_expired: list[Callable[[str, str], None]] = []

    def on_expired(self, listener: Callable[[str, str], None]) -> None:
        """Calls `listener(user_id, run_id)` once a run that ended here has outlived
        DOCGEN_RUN_TTL_S: what is kept about it elsewhere in this process can go."""
        self._on_expired.append(listener)

    def _expired(self, user_id: str, run_id: str) -> None:
        for listener in self._on_expired:
            listener(user_id, run_id)

    async def open(self) -> None:
        await self._store.open(self)

    @property
    def active_runs(self) -> int:
        return sum(1 for run in self._runs.values() if not run.ended)

    async def start(
        self,
        outline: outline_pb2.Outline,
        *,
        user_id: str,
        request_id: str = "",
        trace_id: str | None = None,
        plan_source: events_pb2.PlanSource.ValueType = events_pb2.PLAN_SOURCE_INLINE,
        chunk_interval_ms: int = 0,
    ) -> Run:
        validate_outline(outline, max_total_tokens=self._settings.max_outline_tokens)
        if not 0 <= chunk_interval_ms <= MAX_CHUNK_INTERVAL_MS:
            raise InvalidRequest(
                f"chunk_interval_ms must be 0 to {MAX_CHUNK_INTERVAL_MS}, not {chunk_interval_ms}"
            )
        user_active = sum(1 for r in self._runs.values() if r.user_id == user_id and not r.ended)
        with self._slots.starting(user_id, user_active=user_active, active=self.active_runs):
            run_id = self._new_run_id()
            trace_id = trace_id or new_trace_id()
            await self._slots.claim_shared(user_id, run_id)
            try:
                run_log = await self._store.create(
                    run_id,
                    user_id=user_id,
                    outline=outline,
                    request_id=request_id,
                    trace_id=trace_id,
                )
            except BaseException:
                await self._store.release_user_run(user_id, run_id)
                raise
            run = Run(run_id=run_id, user_id=user_id, log=run_log)
            # Followers read the log itself; only the run's writer coalesces its chunks.
            writer_log = coalescing(run_log, chunk_interval_ms)
            context = self._launch(
                run, writer_log, outline, request_id, trace_id, resume=None, plan_source=plan_source
            )
        context.run(log.info, "run started", extra={"sections": len(outline.sections)})
        return run

    def adopt(self, adopted: AdoptedRun) -> None:
        """Writes on a run taken over from a generator that died (called by the store)."""
        run = Run(run_id=adopted.run_id, user_id=adopted.user_id, log=adopted.log)
        self._store.keep_user_run(adopted.user_id, adopted.run_id)
        trace_id = adopted.trace_id or new_trace_id()
        outline, resume = adopted.outline, adopted.resume
        try:
            # Read back from the store, not from a client: whoever can write there could plant
            # an outline past every limit and buy unlimited LLM time. Checked like a new one.
            validate_outline(outline, max_total_tokens=self._settings.max_outline_tokens)
        except InvalidRequest as error:
            log.warning(
                "taken-over run's outline is invalid; ending it as failed",
                extra={"run_id": adopted.run_id, "problem": str(error)[:300]},
            )
            # Nothing of it reaches the LLM (nor language detection): the run only gets its
            # run_end{failed}.
            outline = outline_pb2.Outline(document_id="invalid")
            resume = dataclasses.replace(
                resume or ResumePoint(next_index=0, next_attempt=1),
                end_status=events_pb2.RUN_STATUS_FAILED,
            )
        context = self._launch(
            run, adopted.log, outline, adopted.request_id, trace_id, resume=resume
        )
        context.run(
            log.info,
            "run taken over",
            extra={
                "last_seq": adopted.log.last_seq,
                "next_section": adopted.resume.next_index if adopted.resume else 0,
                "attempt": adopted.resume.next_attempt if adopted.resume else 1,
            },
        )
        if adopted.cancel_requested:
            # After the task's first step, so that it ends the run with the usual frames.
            loop = asyncio.get_running_loop()
            loop.call_soon(lambda: self._cancel(run, reason="cancelled by its user"))

    def _launch(
        self,
        run: Run,
        run_log: RunWriter,
        outline: outline_pb2.Outline,
        request_id: str,
        trace_id: str,
        *,
        resume: ResumePoint | None,
        plan_source: events_pb2.PlanSource.ValueType = events_pb2.PLAN_SOURCE_INLINE,
    ) -> contextvars.Context:
        execution = RunExecution(
            run_log=run_log,
            outline=outline,
            request_id=request_id,
            writer=self._writer,
            summaries=self._summaries,
            settings=self._settings,
            plan_source=plan_source,
        )
        # The run's task logs with its own ids, and passes the trace id on to every hop.
        context = contextvars.copy_context()
        user = hash_user(run.user_id)
        context.run(set_log_context, trace_id=trace_id, run_id=run.run_id, user=user)
        run.task = asyncio.create_task(
            self._write(run_log, execution, resume), name=f"run-{run.run_id}", context=context
        )
        metrics.ACTIVE_RUNS.inc()
        run.task.add_done_callback(lambda _task: self._on_run_done(run))
        self._runs[run.run_id] = run
        # Nobody may ever subscribe (the caller vanished): the grace period applies from now.
        self._arm_grace_timer(run)
        return context

    @staticmethod
    async def _write(
        run_log: RunWriter, execution: RunExecution, resume: ResumePoint | None
    ) -> None:
        try:
            await execution.execute(resume)
        finally:
            await run_log.aclose()

    async def find(self, run_id: str, *, user_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            stored = await self._store.lookup(run_id)
            if stored is not None:
                run = Run(run_id=run_id, user_id=stored.user_id, log=stored.log)
        if run is None or run.user_id != user_id:
            raise RunNotFound(f"no run {run_id!r} for this user (unknown, expired, or not yours)")
        return run

    async def cancel(self, run_id: str, *, user_id: str) -> bool:
        """Cancels the run; returns True when it had already ended (idempotent)."""
        run = await self.find(run_id, user_id=user_id)
        if run.ended:
            return True
        if run.task is None:
            await self._store.request_cancel(run_id)  # another generator writes it
            return False
        self._cancel(run, reason="cancelled by its user")
        return False

    def cancel_local(self, run_id: str) -> None:
        """A cancel that reached another generator (called by the store)."""
        run = self._runs.get(run_id)
        if run is not None and not run.ended:
            self._cancel(run, reason="cancelled by its user")

    def abandon(self, run_id: str, *, reason: str) -> None:
        """Stops writing the run without ending it: another generator takes it over (its
        lease was lost, the store was unreachable too long, or this generator is stopping)."""
        run = self._runs.get(run_id)
        if run is None or run.task is None:
            return
        del self._runs[run_id]
        self._store.fence(run_id)
        if run.grace_timer is not None:
            run.grace_timer.cancel()
            run.grace_timer = None
        if not run.task.done():
            log.warning("run handed over", extra={"run_id": run_id, "reason": reason})
            run.cancel_requested = True
            run.task.cancel()

    @contextlib.asynccontextmanager
    async def subscription(self, run: Run) -> AsyncIterator[Run]:
        """Counts a follower for the grace period while the block runs."""
        run.subscribers += 1
        metrics.RUN_SUBSCRIBERS.inc()
        if run.grace_timer is not None:
            run.grace_timer.cancel()
            run.grace_timer = None
        try:
            await self._store.watch(run.run_id)
            yield run
        finally:
            self._store.unwatch(run.run_id)
            run.subscribers -= 1
            metrics.RUN_SUBSCRIBERS.dec()
            if run.subscribers == 0 and not run.ended and run.task is not None:
                self._arm_grace_timer(run)

    async def close(self) -> None:
        """Ends what this generator writes: each unfinished run is cancelled (it appends its
        `run_end`, awaited here), or, where the store can hand runs over, left to another
        generator, which takes it over and restarts its current section."""
        tasks = [run.task for run in self._runs.values() if run.task and not run.task.done()]
        for run in list(self._runs.values()):
            if run.ended:
                continue
            if self._store.hands_over_at_shutdown:
                self.abandon(run.run_id, reason="generator shutting down")
            else:
                self._cancel(run, reason="generator shutting down")
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for check in list(self._checks):
            check.cancel()
        await self._store.close()

    async def disconnect(self) -> None:
        """Closes the store's connections (after the last follower's stream)."""
        await self._store.disconnect()

    def _cancel(self, run: Run, *, reason: str) -> None:
        # An ended run may still be storing its last events: never cut that short.
        if run.task is None or run.task.done() or run.ended:
            return
        if not run.cancel_requested:
            run.cancel_requested = True
            log.info("run cancelling", extra={"run_id": run.run_id, "reason": reason})
            run.task.cancel()

    def _arm_grace_timer(self, run: Run, delay_s: float | None = None) -> None:
        if run.grace_timer is not None:
            run.grace_timer.cancel()
        loop = asyncio.get_running_loop()
        run.grace_timer = loop.call_later(
            self._settings.run_grace_s if delay_s is None else delay_s, self._grace_expired, run
        )

    def _grace_expired(self, run: Run) -> None:
        # Followers may be attached through other generators: ask the store first.
        check = asyncio.create_task(self._check_followers(run))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _check_followers(self, run: Run) -> None:
        try:
            followed_for = await self._store.followed_for(run.run_id)
        except RunLogUnavailable:
            followed_for = self._settings.run_grace_s
        if run.subscribers or run.ended or self._runs.get(run.run_id) is not run:
            return
        if followed_for > 0:
            self._arm_grace_timer(run, followed_for)
        else:
            self._cancel(run, reason="no subscriber for the grace period")

    def _on_run_done(self, run: Run) -> None:
        metrics.ACTIVE_RUNS.dec()
        if self._runs.get(run.run_id) is run:  # ended here, not handed over: free its slot
            release = asyncio.create_task(self._store.release_user_run(run.user_id, run.run_id))
            self._checks.add(release)
            release.add_done_callback(self._checks.discard)
        if run.grace_timer is not None:
            run.grace_timer.cancel()
            run.grace_timer = None
        loop = asyncio.get_running_loop()
        keep_s = self._store.keep_ended_s
        if keep_s > 0:
            loop.call_later(keep_s, self._runs.pop, run.run_id, None)
        elif self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]  # the store keeps it: find() reads it from there
        loop.call_later(self._settings.run_ttl_s, self._expired, run.user_id, run.run_id)
