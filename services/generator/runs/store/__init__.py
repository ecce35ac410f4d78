"""Where runs live beyond the process writing them (`port.py` says what a store does):
nowhere (`memory.py`, the default) or Redis Streams (`redis/`, shared by every generator)."""

from __future__ import annotations

from services.generator.runs.store.memory import MemoryRunStore
from services.generator.runs.store.port import RunStore
from services.generator.settings import GeneratorSettings


def open_run_store(settings: GeneratorSettings) -> RunStore:
    """The store `DOCGEN_RUNLOG_URL` asks for: Redis when set, else this process's memory."""
    if not settings.runlog_url:
        return MemoryRunStore(run_ttl_s=settings.run_ttl_s)
    # Imported here: redis-py loads only in deployments that use it.
    from services.generator.runs.store.redis.store import RedisRunStore

    return RedisRunStore(
        settings.runlog_url,
        lease_s=settings.run_lease_s,
        retry_s=settings.runlog_retry_s,
        run_ttl_s=settings.run_ttl_s,
        run_grace_s=settings.run_grace_s,
    )
