"""Cancels across generators: a cancel that reaches any generator is published (and flagged
on the run, for a writer that missed the message); the writer's generator cancels the run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from services.generator.runs.store.port import RunOwner
from services.generator.runs.store.redis.keys import (
    CANCEL_CHANNEL,
    TRANSIENT,
    meta_key,
    unavailable,
)
from services.generator.runs.store.redis.log import RedisRunLog

log = logging.getLogger(__name__)


class CancelRelay:
    """The cancel half of `RedisRunStore` (a mixin: the state is the store's)."""

    redis: Any
    _cancel: Any
    _writing: dict[str, RedisRunLog]
    _owner: RunOwner | None

    async def request_cancel(self, run_id: str) -> None:
        try:
            await self._cancel(keys=[meta_key(run_id)], args=[CANCEL_CHANNEL, run_id])
        except TRANSIENT as error:
            raise unavailable(error) from error

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
