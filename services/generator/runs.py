"""Every run the generator owns: start, find (per user), cancel, subscriber accounting with
a grace period, and expiry after the TTL."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from docgen.v1 import outline_pb2

from services.common import metrics
from services.common.logs import hash_user, set_log_context
from services.common.tracing import new_trace_id
from services.generator.execution import RunExecution, SummaryUpdater
from services.generator.runlog import RunLog
from services.generator.section_writer import SectionWriter
from services.generator.settings import GeneratorSettings

log = logging.getLogger(__name__)

MAX_TARGET_TOKENS = 4096


class RunNotFound(Exception):
    """Unknown, expired, or another user's run: deliberately indistinguishable."""


class TooManyRuns(Exception):
    """The user already has the maximum number of unfinished runs."""


class InvalidOutline(ValueError):
    """The outline cannot be written; the message lists every problem."""


def validate_outline(outline: outline_pb2.Outline) -> None:
    problems: list[str] = []
    if not outline.title.strip():
        problems.append("title is empty")
    if not outline.sections:
        problems.append("sections is empty: an outline needs at least one section")
    seen: set[str] = set()
    for index, section in enumerate(outline.sections):
        where = f"sections[{index}]"
        if not section.id:
            problems.append(f"{where}.id is empty")
        elif section.id in seen:
            problems.append(f"{where}.id {section.id!r} is used by an earlier section")
        seen.add(section.id)
        if not section.title.strip():
            problems.append(f"{where}.title is empty")
        if not 1 <= section.target_tokens <= MAX_TARGET_TOKENS:
            problems.append(f"{where}.target_tokens must be 1..{MAX_TARGET_TOKENS}, got {section.target_tokens}")
    if problems:
        raise InvalidOutline("; ".join(problems))


@dataclass(eq=False)
class Run:
    run_id: str
    user_id: str
    log: RunLog
    task: asyncio.Task[None] | None = None
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
    ) -> None:
        self._writer = writer
        self._summaries = summaries
        self._settings = settings
        self._new_run_id = new_run_id
        self._runs: dict[str, Run] = {}

    @property
    def active_runs(self) -> int:
        return sum(1 for run in self._runs.values() if not run.ended)

    def start(
        self,
        outline: outline_pb2.Outline,
        *,
        user_id: str,
        request_id: str = "",
        trace_id: str | None = None,
    ) -> Run:
        validate_outline(outline)
        active = sum(1 for r in self._runs.values() if r.user_id == user_id and not r.ended)
        if active >= self._settings.max_active_runs_per_user:
            raise TooManyRuns(
                f"{active} runs are still going for this user (limit "
                f"{self._settings.max_active_runs_per_user}); cancel one or wait for it to end"
            )
        run_id = self._new_run_id()
        run = Run(run_id=run_id, user_id=user_id, log=RunLog(run_id))
        execution = RunExecution(
            run_log=run.log,
            outline=outline,
            request_id=request_id,
            writer=self._writer,
            summaries=self._summaries,
            settings=self._settings,
        )
        # The run's task logs with its own ids, and passes the trace id on to every hop.
        context = contextvars.copy_context()
        context.run(
            set_log_context, trace_id=trace_id or new_trace_id(), run_id=run_id, user=hash_user(user_id)
        )
        run.task = asyncio.create_task(execution.execute(), name=f"run-{run_id}", context=context)
        metrics.ACTIVE_RUNS.inc()
        run.task.add_done_callback(lambda _task: self._on_run_done(run))
        self._runs[run_id] = run
        # Nobody may ever subscribe (the caller vanished): the grace period applies from now.
        self._arm_grace_timer(run)
        context.run(log.info, "run started", extra={"sections": len(outline.sections)})
        return run

    def find(self, run_id: str, *, user_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None or run.user_id != user_id:
            raise RunNotFound(f"no run {run_id!r} for this user (unknown, expired, or not yours)")
        return run

    def cancel(self, run_id: str, *, user_id: str) -> bool:
        """Cancels the run; returns True when it had already ended (idempotent)."""
        run = self.find(run_id, user_id=user_id)
        if run.ended:
            return True
        self._cancel(run, reason="cancelled by its user")
        return False

    @contextlib.asynccontextmanager
    async def subscription(self, run: Run) -> AsyncIterator[Run]:
        """Counts a follower for the grace period while the block runs."""
        run.subscribers += 1
        metrics.RUN_SUBSCRIBERS.inc()
        if run.grace_timer is not None:
            run.grace_timer.cancel()
            run.grace_timer = None
        try:
            yield run
        finally:
            run.subscribers -= 1
            metrics.RUN_SUBSCRIBERS.dec()
            if run.subscribers == 0 and not run.ended:
                self._arm_grace_timer(run)

    async def close(self) -> None:
        """Cancels every unfinished run and waits until each has appended `run_end`."""
        tasks = [run.task for run in self._runs.values() if run.task and not run.task.done()]
        for run in self._runs.values():
            if not run.ended:
                self._cancel(run, reason="generator shutting down")
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _cancel(self, run: Run, *, reason: str) -> None:
        if run.task is not None and not run.task.done() and not run.cancel_requested:
            run.cancel_requested = True
            log.info("run cancelling", extra={"run_id": run.run_id, "reason": reason})
            run.task.cancel()

    def _arm_grace_timer(self, run: Run) -> None:
        if run.grace_timer is not None:
            run.grace_timer.cancel()
        loop = asyncio.get_running_loop()
        run.grace_timer = loop.call_later(
            self._settings.run_grace_s,
            lambda: self._cancel(run, reason="no subscriber for the grace period"),
        )

    def _on_run_done(self, run: Run) -> None:
        metrics.ACTIVE_RUNS.dec()
        if run.grace_timer is not None:
            run.grace_timer.cancel()
            run.grace_timer = None
        asyncio.get_running_loop().call_later(self._settings.run_ttl_s, self._runs.pop, run.run_id, None)
