"""Which asyncio event loop the services run on: uvloop (libuv, in C) unless told otherwise.

The event loop's own work (selecting, scheduling callbacks and tasks, socket reads and
writes) is a large share of the edge's and the generator's CPU per relayed token
(docs/performance.md); uvloop does that work for less. grpc.aio runs on any asyncio loop
(its poller thread hands completions to the loop through a thread-safe call)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common.env import env_str

log = logging.getLogger(__name__)

T = TypeVar("T")
CHOICES = ("uvloop", "asyncio")


@dataclass(frozen=True)
class LoopSettings:
    event_loop: str = "uvloop"
    """`uvloop` or `asyncio` (the standard library's loop): the event loop of the edge, the
    generator and the summary service (`DOCGEN_EVENT_LOOP`). uvloop falls back to asyncio,
    with a warning, where it is not installed."""

    @classmethod
    def from_env(cls) -> LoopSettings:
        choice = env_str("DOCGEN_EVENT_LOOP", cls.event_loop).strip().lower()
        if choice not in CHOICES:
            raise ValueError(
                f"DOCGEN_EVENT_LOOP must be one of {', '.join(CHOICES)}, not {choice!r}"
            )
        return cls(event_loop=choice)


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen event loop."""
    if LoopSettings.from_env().event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on the asyncio event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)
