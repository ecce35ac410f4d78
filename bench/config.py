"""What a benchmark run does: the full suite (`make bench`) or the smoke run (`--quick`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCENARIOS = (
    "handshake",
    "sections",
    "summary_fast",
    "relay",
    "capacity",
    "capacity_coalesced",
    "soak",
    "scaling",
    "memory",
    "k6",
    "profile",
    "quality",
)


@dataclass(frozen=True)
class BenchConfig:
    mode: str = "full"
    scenarios: tuple[str, ...] = SCENARIOS
    rate: float = 30.0
    """Tokens per second of every stamping-LLM stream."""

    handshakes: int = 500
    """Sequential handshakes per repeat."""
    handshake_repeats: int = 3
    handshake_load_streams: int = 200
    """Streams running while the handshakes are repeated under load."""

    section_documents: tuple[int, ...] = (3,)
    """Sections per document of the bundled-model runs (their summaries give the summary
    latency). Each 600-token section takes ~16 s through the edge and as long direct: 3 per
    side are ~100 s of the 10 minutes the whole run may take (4 per side made it 9.8)."""
    section_tokens: int = 600

    summary_fast_rounds: int = 20
    """Passes over the 8-section document timing the summary's fast path in process."""

    quality_outlines: tuple[str, ...] = ()
    """`document_id`s of the example outlines the quality scenario writes; empty: all."""
    quality_max_sections: int | None = 1
    """Sections written per outline (None: all; `python -m bench.scenarios.quality` writes
    them all, docs/quality.md). One: each outline's opening section (where scaffolding and
    title echoes show) in both variants, ~1 minute; a second per outline cost another ~1 of
    the 10 minutes `make bench` may take."""

    relay_levels: tuple[int, ...] = (1, 100, 500)
    relay_repeats: int = 2
    relay_overloaded_repeats: dict[int, int] = field(default_factory=lambda: {500: 1})
    """Repeats at stream counts past capacity, where the figure says "overloaded" either way:
    one repeat of 500 streams saves ~20 s of `make bench`."""
    relay_measure_s: dict[int, float] = field(default_factory=lambda: {1: 5.0})
    """Window per repeat, by stream count; `relay_default_measure_s` for the others."""
    relay_default_measure_s: float = 5.0

    capacity_goal_p99_ms: float = 100.0
    capacity_budget_s: float = 40.0
    """Wall-clock bound of the capacity search (each of: per delta, coalesced, scaled)."""
    capacity_measure_s: float = 5.0
    capacity_max_streams: int = 2000
    coalesced_interval_ms: int = 100
    """`generate.options.chunk_interval_ms` of the coalesced capacity search; its p99 goal
    grows by as much (a held delta waits up to one interval by design)."""

    soak_streams: int = 200
    soak_s: float = 48.0
    """How long the soak lasts, in windows of `soak_window_s` with fresh runs."""
    soak_window_s: float = 16.0

    scaling_budget_s: float = 35.0
    """Wall-clock bound of the capacity search with two edges and two generators."""
    scaling_redis_probe: bool = False
    """Also probe two of each on a shared Redis run log (a third stack to start, ~35 s):
    `python -m bench.run --only capacity,scaling --redis-probe`. Off in `make bench`, which
    must fit in 10 minutes; its last result is in docs/performance.md."""

    memory_sockets: int = 2000

    k6_vus: int = 50
    k6_duration_s: float = 15.0
    k6_tokens: int = 150

    profile_streams: tuple[int, ...] = (100, 200)
    """Stream counts at which the edge and the generator are profiled."""
    profile_s: float = 6.0

    def measure_s(self, streams: int) -> float:
        return self.relay_measure_s.get(streams, self.relay_default_measure_s)

    def repeats(self, streams: int) -> int:
        return self.relay_overloaded_repeats.get(streams, self.relay_repeats)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["relay_measure_s"] = {str(k): v for k, v in self.relay_measure_s.items()}
        data["relay_overloaded_repeats"] = {
            str(k): v for k, v in self.relay_overloaded_repeats.items()
        }
        return data


def quick_config() -> BenchConfig:
    """Every scenario at a small scale: proves the harness end to end in about two minutes;
    its numbers are not the benchmark."""
    return BenchConfig(
        mode="quick",
        handshakes=200,
        handshake_repeats=1,
        handshake_load_streams=20,
        section_documents=(2,),
        section_tokens=64,
        summary_fast_rounds=3,
        quality_outlines=("inc-2291-postmortem",),
        quality_max_sections=1,
        # One probe per search and a single relay level: the quick run proves the harness
        # (~2 minutes, a third of it starting processes), its numbers are not the benchmark.
        relay_levels=(20,),
        relay_repeats=1,
        relay_overloaded_repeats={},
        relay_measure_s={},
        relay_default_measure_s=2.0,
        capacity_budget_s=1.0,
        capacity_measure_s=3.0,
        soak_streams=20,
        soak_s=9.0,
        soak_window_s=3.0,
        scaling_budget_s=1.0,
        scaling_redis_probe=False,
        memory_sockets=200,
        k6_vus=10,
        k6_duration_s=5.0,
        k6_tokens=60,
        profile_streams=(30,),
        profile_s=3.0,
    )
