"""`RunStore` in this process only: a run lives and dies with its generator, so nothing is
shared, looked up, handed over or watched elsewhere."""

from __future__ import annotations

from docgen.v1 import outline_pb2

from services.generator.runs.log import MemoryRunLog, RunWriter
from services.generator.runs.store.port import RunOwner, StoredRun


class MemoryRunStore:
    def __init__(self, *, run_ttl_s: float) -> None:
        self._run_ttl_s = run_ttl_s

    @property
    def keep_ended_s(self) -> float:
        return self._run_ttl_s  # the registry's own map is the only place the run exists

    @property
    def hands_over_at_shutdown(self) -> bool:
        return False  # no other process could resume it

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
    ) -> RunWriter:
        return MemoryRunLog(run_id)

    async def reserve_user_run(self, user_id: str, run_id: str, limit: int) -> bool:
        return True  # one generator: the registry's own count is the whole truth

    def keep_user_run(self, user_id: str, run_id: str) -> None:
        pass

    async def release_user_run(self, user_id: str, run_id: str) -> None:
        pass

    async def lookup(self, run_id: str) -> StoredRun | None:
        return None  # every run is in the registry already

    async def request_cancel(self, run_id: str) -> None:
        pass  # unreachable: every run is written here

    async def watch(self, run_id: str) -> None:
        pass

    def unwatch(self, run_id: str) -> None:
        pass

    async def followed_for(self, run_id: str) -> float:
        return 0.0  # no follower anywhere else

    def fence(self, run_id: str) -> None:
        pass

    async def close(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass
