"""Generator configuration, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.env import env_float, env_int, env_opt, env_str

BUNDLED_LLM_BASE_URL = "http://127.0.0.1:8081/v1"
BUNDLED_LLM_MODEL = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class GeneratorSettings:
    addr: str = "127.0.0.1:50051"
    """Where the gRPC server listens (`DOCGEN_GENERATOR_ADDR`)."""
    summary_addr: str = "127.0.0.1:50052"
    """Summary service to dial (`DOCGEN_SUMMARY_ADDR`)."""
    llm_base_url: str = BUNDLED_LLM_BASE_URL
    """OpenAI-compatible endpoint (`DOCGEN_LLM_BASE_URL`)."""
    llm_model: str = BUNDLED_LLM_MODEL
    """Model name sent to the endpoint (`DOCGEN_LLM_MODEL`)."""
    llm_api_key: str = "sk-no-key-needed"
    """`DOCGEN_LLM_API_KEY`, else `OPENAI_API_KEY`, else a placeholder local servers ignore."""
    llm_temperature: float = 0.7
    """Sampling temperature (`DOCGEN_LLM_TEMPERATURE`)."""
    llm_connect_retries: int = 3
    """Retries of a request that failed before its first token: 429, 5xx, refused
    (`DOCGEN_LLM_MAX_RETRIES`), with jittered exponential backoff, honouring Retry-After."""
    llm_request_timeout_s: float = 30.0
    """Budget for the LLM to answer a request's headers (`DOCGEN_LLM_TIMEOUT_S`)."""
    llm_stall_timeout_s: float = 20.0
    """A stream with no token for this long counts as broken (`DOCGEN_LLM_STALL_TIMEOUT_S`)."""
    section_attempts: int = 3
    """Attempts per section when the stream breaks mid-way (`DOCGEN_SECTION_ATTEMPTS`)."""
    summary_deadline_s: float = 2.0
    """Deadline of the fast summary update (`DOCGEN_SUMMARY_DEADLINE_S`)."""
    summary_refine_deadline_s: float = 20.0
    """How long a refined (LLM) summary may still arrive after the fast one
    (`DOCGEN_SUMMARY_REFINE_DEADLINE_S`)."""
    summary_prompt_wait_s: float = 0.0
    """How long the next section may wait for a refined (LLM) summary of the previous one, so
    its prompt gets the refined text (`DOCGEN_SUMMARY_PROMPT_WAIT_S`); 0, the default, never
    waits: the next section starts right after the fast summary."""
    run_grace_s: float = 120.0
    """A run with no subscriber is cancelled after this long (`DOCGEN_RUN_GRACE_S`)."""
    run_ttl_s: float = 600.0
    """A finished run stays resumable this long (`DOCGEN_RUN_TTL_S`)."""
    max_active_runs_per_user: int = 4
    """Concurrent unfinished runs per user (`DOCGEN_MAX_RUNS_PER_USER`)."""
    metrics_port: int = 9101
    """Prometheus /metrics port, 0 to disable (`DOCGEN_GENERATOR_METRICS_PORT`)."""
    shutdown_drain_s: float = 0.0
    """On SIGTERM, health turns NOT_SERVING this long before calls are refused, so load
    balancers and edges stop sending new runs first (`DOCGEN_GENERATOR_SHUTDOWN_DRAIN_S`;
    a few seconds behind Kubernetes)."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, in-flight calls get this long before being cancelled
    (`DOCGEN_GENERATOR_SHUTDOWN_GRACE_S`)."""

    @classmethod
    def from_env(cls) -> GeneratorSettings:
        return cls(
            addr=env_str("DOCGEN_GENERATOR_ADDR", cls.addr),
            summary_addr=env_str("DOCGEN_SUMMARY_ADDR", cls.summary_addr),
            llm_base_url=env_str("DOCGEN_LLM_BASE_URL", cls.llm_base_url),
            llm_model=env_str("DOCGEN_LLM_MODEL", cls.llm_model),
            llm_api_key=env_opt("DOCGEN_LLM_API_KEY") or env_opt("OPENAI_API_KEY") or cls.llm_api_key,
            llm_temperature=env_float("DOCGEN_LLM_TEMPERATURE", cls.llm_temperature, minimum=0),
            llm_connect_retries=env_int("DOCGEN_LLM_MAX_RETRIES", cls.llm_connect_retries, minimum=0),
            llm_request_timeout_s=env_float("DOCGEN_LLM_TIMEOUT_S", cls.llm_request_timeout_s, minimum=0.1),
            llm_stall_timeout_s=env_float(
                "DOCGEN_LLM_STALL_TIMEOUT_S", cls.llm_stall_timeout_s, minimum=0.05
            ),
            section_attempts=env_int("DOCGEN_SECTION_ATTEMPTS", cls.section_attempts, minimum=1),
            summary_deadline_s=env_float(
                "DOCGEN_SUMMARY_DEADLINE_S", cls.summary_deadline_s, minimum=0.01
            ),
            summary_refine_deadline_s=env_float(
                "DOCGEN_SUMMARY_REFINE_DEADLINE_S", cls.summary_refine_deadline_s, minimum=0.01
            ),
            summary_prompt_wait_s=env_float(
                "DOCGEN_SUMMARY_PROMPT_WAIT_S", cls.summary_prompt_wait_s, minimum=0
            ),
            run_grace_s=env_float("DOCGEN_RUN_GRACE_S", cls.run_grace_s, minimum=0),
            run_ttl_s=env_float("DOCGEN_RUN_TTL_S", cls.run_ttl_s, minimum=0),
            max_active_runs_per_user=env_int(
                "DOCGEN_MAX_RUNS_PER_USER", cls.max_active_runs_per_user, minimum=1
            ),
            metrics_port=env_int("DOCGEN_GENERATOR_METRICS_PORT", cls.metrics_port, minimum=0),
            shutdown_drain_s=env_float(
                "DOCGEN_GENERATOR_SHUTDOWN_DRAIN_S", cls.shutdown_drain_s, minimum=0
            ),
            shutdown_grace_s=env_float(
                "DOCGEN_GENERATOR_SHUTDOWN_GRACE_S", cls.shutdown_grace_s, minimum=0
            ),
        )
