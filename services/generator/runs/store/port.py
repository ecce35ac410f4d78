"""The port between the run registry and whatever stores runs: `RunStore`, and what a store
hands back. The registry never asks which store it has; where stores differ, it asks the
store what to do (`keep_ended_s`, `followed_for`, `hands_over_at_shutdown`).

A store that shares runs between generators calls the registry back (`RunOwner`) with runs it
took over from a dead generator, cancels that arrived at another generator, and runs whose
lease it lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from docgen.v1 import outline_pb2

from services.generator.resume import ResumePoint
from services.generator.runs.log import RunReader, RunWriter


@dataclass(frozen=True)
class StoredRun:
    """A run another generator writes (or wrote), as the store knows it."""

    user_id: str
    log: RunReader


@dataclass(frozen=True)
class AdoptedRun:
    """A run this generator took over; the registry writes it on from `resume`."""

    run_id: str
    user_id: str
    outline: outline_pb2.Outline
    request_id: str
    trace_id: str | None
    log: RunWriter
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
    @property
    def keep_ended_s(self) -> float:
        """How long the registry keeps a run it wrote findable after it ended: the run TTL
        when nothing else remembers the run, 0 when the store keeps it (`lookup` finds it)."""
        ...

    @property
    def hands_over_at_shutdown(self) -> bool:
        """True: a generator stopping leaves its unfinished runs to another one (which takes
        each over); False: it cancels them, and each ends with its usual events."""
        ...

    async def open(self, owner: RunOwner) -> None: ...

    async def create(
        self,
        run_id: str,
        *,
        user_id: str,
        outline: outline_pb2.Outline,
        request_id: str,
        trace_id: str,
    ) -> RunWriter:
        """The log of a new run that this generator writes; raises `RunLogUnavailable`."""
        ...

    async def reserve_user_run(self, user_id: str, run_id: str, limit: int) -> bool:
        """Takes one of the user's `limit` run slots for `run_id` wherever runs are counted
        (every generator sharing the store); False: all taken. Raises `RunLogUnavailable`."""
        ...

    def keep_user_run(self, user_id: str, run_id: str) -> None:
        """A run taken over: this generator now keeps its user slot."""
        ...

    async def release_user_run(self, user_id: str, run_id: str) -> None:
        """The run ended: its slot is free."""
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
        """Seconds the run still counts as followed through another generator (0: it does
        not): asked when its grace period lapses with no follower here."""
        ...

    def fence(self, run_id: str) -> None:
        """Stops storing what this generator appends to the run (it is handed over)."""
        ...

    async def close(self) -> None:
        """Stores what is still queued, hands every run still written here over, and stops
        background work; followers still work until `disconnect`."""
        ...

    async def disconnect(self) -> None: ...
