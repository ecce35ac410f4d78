"""One module per benchmark scenario; each `run(ctx)` returns its JSON-ready result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.processes import DocgenStack, LLMProcess, ServiceProcess


@dataclass
class Context:
    config: BenchConfig
    log_dir: Path
    say: Callable[[str], None]
    results: dict[str, Any] = field(default_factory=dict)
    """Results of the scenarios run so far (capacity starts from relay's)."""
    stamping: LLMProcess | None = None
    stack: DocgenStack | None = None
    """The docgen processes wired to the stamping LLM."""
    bare: tuple[ServiceProcess, int] | None = None
    llama: LLMProcess | None = None
    llama_stack: DocgenStack | None = None
    llama_extra_body: dict[str, Any] = field(default_factory=dict)
    """What the generator and the direct client both add to each bundled-model request."""
    started: float = field(default_factory=time.monotonic)

    def stamping_processes(self) -> dict[str, ServiceProcess]:
        assert self.stack is not None and self.stamping is not None
        return {**self.stack.services(), "stamping llm": self.stamping.service}
