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

    handshakes: int = 1000
    """Sequential handshakes per repeat."""
    handshake_repeats: int = 3
    handshake_load_streams: int = 200
    """Streams running while the handshakes are repeated under load."""

    section_documents: tuple[int, ...] = (8, 8, 4)
    """Sections per document of the bundled-model runs (20 sections; 8-section documents for
    the summary latency)."""
    section_tokens: int = 600

    summary_fast_rounds: int = 20

    quality_outlines: tuple[str, ...] = ()
    """`document_id`s of the example outlines the quality scenario writes; empty: all."""
    quality_max_sections: int | None = None
    """Sections written per outline (None: all)."""
    """Passes over the 8-section document timing the summary's fast path in process."""

    relay_levels: tuple[int, ...] = (1, 100, 500)
    relay_repeats: int = 3
    relay_measure_s: dict[int, float] = field(default_factory=lambda: {1: 10.0})
    """Window per repeat, by stream count; `relay_default_measure_s` for the others."""
    relay_default_measure_s: float = 6.0

    capacity_goal_p99_ms: float = 100.0
    capacity_budget_s: float = 120.0
    """Wall-clock bound of the capacity search."""
    capacity_measure_s: float = 6.0
    capacity_max_streams: int = 2000

    memory_sockets: int = 2000

    k6_vus: int = 50
    k6_duration_s: float = 30.0
    k6_tokens: int = 150

    profile_streams: tuple[int, ...] = (100, 300)
    """Stream counts at which the edge and the generator are profiled."""
    profile_s: float = 10.0

    def measure_s(self, streams: int) -> float:
        return self.relay_measure_s.get(streams, self.relay_default_measure_s)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["relay_measure_s"] = {str(k): v for k, v in self.relay_measure_s.items()}
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
        relay_levels=(1, 50),
        relay_repeats=1,
        relay_measure_s={1: 3.0},
        relay_default_measure_s=3.0,
        capacity_budget_s=25.0,
        capacity_measure_s=3.0,
        memory_sockets=200,
        k6_vus=10,
        k6_duration_s=8.0,
        k6_tokens=60,
        profile_streams=(30,),
        profile_s=4.0,
    )
