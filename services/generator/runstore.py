"""Where runs live beyond the process writing them: nowhere (`MemoryRunStore`, the default: a
run lives and dies with its generator) or Redis Streams (`RedisRunStore`, shared by every
generator: any of them serves a resume, and a run outlives the generator writing it).

The registry calls its store; a shared store calls the registry back (`RunOwner`) with runs
it took over from a dead generator and cancels that arrived at another generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from docgen.v1 import outline_pb2

from services.generator.resume import ResumePoint
from services.generator.runlog import RunEventLog, RunLog
from services.generator.settings import GeneratorSettings


@dataclass(frozen=True)
class StoredRun:
    """A run another generator writes (or wrote), as the store knows it."""

    user_id: str
    log: RunEventLog
    """For following only: nobody here appends to it."""


@dataclass(frozen=True)
class AdoptedRun:
    """A run this generator took over; the registry writes it on from `resume`."""

    run_id: str
    user_id: str
    outline: outline_pb2.Outline
    request_id: str
    trace_id: str | None
    log: RunEventLog
    resume: ResumePoint | None
    """None: the previous writer died before `run_started`; the run starts from scratch."""
    cancel_requested: bool
    """Its user cancelled it while no generator was writing it."""


class RunOwner(Protocol):
    """What a shared store needs from the registry."""

    def adopt(self, run: AdoptedRun) -> None: ...

    def cancel_local(self, run_id: str) -> None: ...

    def abandon(self, run_id: str, *, reason: str) -> None:
        """Stop writing the run at once, without ending it: another writer goes on."""
        ...


class RunStore(Protocol):
    shared: bool
    """True when other generators see these runs (then the registry asks the store about
    runs it does not write itself)."""

    async def open(self, owner: RunOwner) -> None: ...

    async def create(
        self,
        run_id: str,
        *,
        user_id: str,
        outline: outline_pb2.Outline,
        request_id: str,
        trace_id: str,
    ) -> RunEventLog:
        """The log of a new run that this generator writes; raises `RunLogUnavailable`."""
        ...

    async def lookup(self, run_id: str) -> StoredRun | None:
        """A run written elsewhere (None: unknown or expired); raises `RunLogUnavailable`."""
        ...

    async def request_cancel(self, run_id: str) -> None:
        """Asks whichever generator writes the run to cancel it."""
        ...

    async def watch(self, run_id: str) -> None:
        """A follower of the run is attached here (counts for its grace period)."""
        ...

    def unwatch(self, run_id: str) -> None: ...

    async def followed_for(self, run_id: str) -> float:
        """Seconds the run still counts as followed through some generator (0: it does not)."""
        ...

    def fence(self, run_id: str) -> None:
        """Stops storing what this generator appends to the run (it is handed over)."""
        ...

    async def close(self) -> None:
        """Stores what is still queued, hands every run still written here over, and stops
        background work; followers still work until `disconnect`."""
        ...

    async def disconnect(self) -> None: ...


class MemoryRunStore:
    """Runs in this process only: the log is a `RunLog`; nothing is shared."""

    shared = False

    async def open(self, owner: RunOwner) -> None:
        pass

    async def create(
        self,
        run_id: str,
        *,
        user_id: str,
        outline: outline_pb2.Outline,
        request_id: str,
        trace_id: str,
    ) -> RunEventLog:
        return RunLog(run_id)

    async def lookup(self, run_id: str) -> StoredRun | None:
        return None

    async def request_cancel(self, run_id: str) -> None:
        pass

    async def watch(self, run_id: str) -> None:
        pass

    def unwatch(self, run_id: str) -> None:
        pass

    async def followed_for(self, run_id: str) -> float:
        return 0.0

    def fence(self, run_id: str) -> None:
        pass

    async def close(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass


def open_run_store(settings: GeneratorSettings) -> RunStore:
    """The store `DOCGEN_RUNLOG_URL` asks for: Redis when set, else this process's memory."""
    if not settings.runlog_url:
        return MemoryRunStore()
    from services.generator.redis_runs import RedisRunStore  # only deployments that use it

    return RedisRunStore(
        settings.runlog_url,
        lease_s=settings.run_lease_s,
        retry_s=settings.runlog_retry_s,
        run_ttl_s=settings.run_ttl_s,
        run_grace_s=settings.run_grace_s,
    )
