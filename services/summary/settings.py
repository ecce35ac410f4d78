"""Summary service configuration, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from services.common.defaults import (
    BUNDLED_LLM_BASE_URL,
    BUNDLED_LLM_MODEL,
    LLM_API_KEY_PLACEHOLDER,
    SUMMARY_ADDR,
)
from services.common.env import ConfigError, env_float, env_int, env_opt, env_str
from services.common.grpc_tls import GrpcTls, PeerAuth

SummaryMode = Literal["extractive", "llm"]
SUMMARY_MODES: tuple[SummaryMode, ...] = ("extractive", "llm")


@dataclass(frozen=True)
class SummarySettings:
    addr: str = SUMMARY_ADDR
    """Where the gRPC server listens (`DOCGEN_SUMMARY_ADDR`)."""
    budget_words: int = 250
    """Length budget of the global summary in words (`DOCGEN_SUMMARY_BUDGET_WORDS`)."""
    max_section_chars: int = 32_000
    """Only the first this-many characters of a section are summarised; a 4096-token
    section is well below it (`DOCGEN_SUMMARY_MAX_SECTION_CHARS`). Bounds the CPU one
    request can take."""
    language: str = "en"
    """Default language of sentence segmentation and stop words when a request names none
    (`DOCGEN_SUMMARY_LANGUAGE`, a BCP 47 tag)."""
    mode: SummaryMode = "extractive"
    """`extractive`: one fast update per section. `llm`: the fast update, then an LLM rewrite of
    it when that arrives in time (`DOCGEN_SUMMARY_MODE`). Not worth it with the bundled 135M
    model: its rewrites are mostly rejected, and each holds the model for seconds while the
    next section waits (docs/prompts.md)."""
    llm_base_url: str = BUNDLED_LLM_BASE_URL
    """OpenAI-compatible endpoint of the refinement (`DOCGEN_SUMMARY_LLM_BASE_URL`, else
    `DOCGEN_LLM_BASE_URL`, else the bundled local server). Only used in `llm` mode."""
    llm_model: str = BUNDLED_LLM_MODEL
    """Model of the refinement (`DOCGEN_SUMMARY_LLM_MODEL`, else `DOCGEN_LLM_MODEL`)."""
    llm_api_key: str = LLM_API_KEY_PLACEHOLDER
    """`DOCGEN_SUMMARY_LLM_API_KEY`, else `DOCGEN_LLM_API_KEY`, else `OPENAI_API_KEY`, else a
    placeholder local servers ignore."""
    llm_deadline_s: float = 15.0
    """The whole refinement (request, every token, checks) must finish within this long after
    the fast update, or it is dropped (`DOCGEN_SUMMARY_LLM_DEADLINE_S`). Keep it below the
    generator's `DOCGEN_SUMMARY_REFINE_DEADLINE_S` (20 s), which bounds how long it listens."""
    metrics_port: int = 9102
    """Prometheus /metrics port, 0 to disable (`DOCGEN_SUMMARY_METRICS_PORT`)."""
    grpc_tls: GrpcTls | None = None
    """TLS for the gRPC server (`DOCGEN_GRPC_TLS_CERT`/`_KEY`/`_CA`); None: plaintext."""
    grpc_peer_auth: PeerAuth | None = None
    """Who may call this server (`DOCGEN_GRPC_SERVICE_TOKEN`, `DOCGEN_GRPC_ALLOWED_PEERS`).
    Beyond loopback one of them is required: the service refuses to start otherwise."""

    @classmethod
    def from_env(cls) -> SummarySettings:
        mode = env_str("DOCGEN_SUMMARY_MODE", cls.mode).strip().lower()
        if mode not in SUMMARY_MODES:
            choices = ", ".join(SUMMARY_MODES)
            raise ConfigError(f"DOCGEN_SUMMARY_MODE={mode!r} must be one of {choices}")
        return cls(
            addr=env_str("DOCGEN_SUMMARY_ADDR", cls.addr),
            budget_words=env_int("DOCGEN_SUMMARY_BUDGET_WORDS", cls.budget_words, minimum=20),
            max_section_chars=env_int(
                "DOCGEN_SUMMARY_MAX_SECTION_CHARS", cls.max_section_chars, minimum=1000
            ),
            language=env_str("DOCGEN_SUMMARY_LANGUAGE", cls.language),
            mode=cast(SummaryMode, mode),
            llm_base_url=env_opt("DOCGEN_SUMMARY_LLM_BASE_URL")
            or env_str("DOCGEN_LLM_BASE_URL", cls.llm_base_url),
            llm_model=env_opt("DOCGEN_SUMMARY_LLM_MODEL")
            or env_str("DOCGEN_LLM_MODEL", cls.llm_model),
            llm_api_key=env_opt("DOCGEN_SUMMARY_LLM_API_KEY")
            or env_opt("DOCGEN_LLM_API_KEY")
            or env_opt("OPENAI_API_KEY")
            or cls.llm_api_key,
            llm_deadline_s=env_float(
                "DOCGEN_SUMMARY_LLM_DEADLINE_S", cls.llm_deadline_s, minimum=0.01
            ),
            metrics_port=env_int("DOCGEN_SUMMARY_METRICS_PORT", cls.metrics_port, minimum=0),
            grpc_tls=GrpcTls.from_env(),
            grpc_peer_auth=PeerAuth.from_env(),
        )
