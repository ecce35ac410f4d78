"""Garbage-collector settings for the long-running services.

Streaming allocates a few short-lived objects per token, so CPython's default first-generation
threshold (700) runs a collection every few tokens; profiles of the generator showed 10–13 %
of its CPU in the collector at 100 streams. Objects alive after start-up (modules, stubs,
settings) are frozen so later collections skip them.

The threshold is also the longest pause: a collection walks every young object, and the
process does nothing else meanwhile. At 50,000 the generator stopped for 45–56 ms a few times
a minute at 100 streams, and each such pause set the relay's p99 (a window without one: 6.6
ms; with one: 33–38 ms). At 5,000 its pauses were 2–5 ms, for the same CPU per token (186 vs
189 µs, one sitting; docs/performance.md)."""

from __future__ import annotations

import gc

FIRST_GENERATION_THRESHOLD = 5_000


def tune_gc_after_startup() -> None:
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)
