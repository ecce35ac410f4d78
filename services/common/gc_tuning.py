"""Garbage-collector settings for the long-running services.

Streaming allocates a few short-lived objects per token, so CPython's default first-generation
threshold (700) runs a collection every few tokens; profiles of the generator showed 10–13 %
of its CPU in the collector at 100 streams. Objects alive after start-up (modules, stubs,
settings) are frozen so later collections skip them."""

from __future__ import annotations

import gc

FIRST_GENERATION_THRESHOLD = 50_000


def tune_gc_after_startup() -> None:
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)
