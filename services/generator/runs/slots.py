"""The run limits a start must fit in: this user's unfinished runs (here, then over every
generator sharing the store) and this generator's own. A start is checked and counted before
any await, so a burst of starts on one socket cannot all see the same count while the first
ones are still being created (issue 18)."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

from services.generator.errors import TooManyRuns
from services.generator.runs.store.port import RunStore
from services.generator.settings import GeneratorSettings


class RunSlots:
    def __init__(self, settings: GeneratorSettings, store: RunStore) -> None:
        self._settings = settings
        self._store = store
        self._reserved: collections.Counter[str] = collections.Counter()
        """Per user: runs being started (checked against the limit, not registered yet)."""

    @contextlib.contextmanager
    def starting(self, user_id: str, *, user_active: int, active: int) -> Iterator[None]:
        """Holds one of this user's slots while a run is created, given the user's unfinished
        runs (`user_active`) and this generator's (`active`) already registered. Leave it
        with no await after registering the run: it is then counted once, as a run."""
        limit = self._settings.max_active_runs_per_user
        running = self._reserved[user_id] + user_active
        if running >= limit:
            raise TooManyRuns(
                f"{running} runs are still going for this user (limit "
                f"{limit}); cancel one or wait for it to end"
            )
        if 0 < self._settings.max_active_runs <= active + self._reserved.total():
            raise TooManyRuns(
                f"this generator is writing {active} runs, its limit; retry in a few seconds"
            )
        self._reserved[user_id] += 1
        try:
            yield
        finally:
            self._reserved[user_id] -= 1
            if self._reserved[user_id] <= 0:
                del self._reserved[user_id]

    async def claim_shared(self, user_id: str, run_id: str) -> None:
        """The user's slot across every generator sharing the store, atomically there; the
        store frees it when the run ends (or `release_user_run` when it is never created)."""
        limit = self._settings.max_active_runs_per_user
        if not await self._store.reserve_user_run(user_id, run_id, limit):
            raise TooManyRuns(
                f"{limit} runs are still going for this user (limit {limit}, over every "
                "generator); cancel one or wait for it to end"
            )
