"""Generator configuration, read once from the environment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.common.defaults import (
    BUNDLED_LLM_BASE_URL,
    BUNDLED_LLM_MODEL,
    GENERATOR_ADDR,
    LLM_API_KEY_PLACEHOLDER,
    SUMMARY_ADDR,
)
from services.common.env import ConfigError, env_float, env_int, env_opt, env_str
from services.common.grpc_tls import GrpcTls, PeerAuth


@dataclass(frozen=True)
class GeneratorSettings:
    addr: str = GENERATOR_ADDR
    """Where the gRPC server listens (`DOCGEN_GENERATOR_ADDR`)."""
    summary_addr: str = SUMMARY_ADDR
    """Summary service to dial (`DOCGEN_SUMMARY_ADDR`)."""
    llm_base_url: str = BUNDLED_LLM_BASE_URL
    """OpenAI-compatible endpoint (`DOCGEN_LLM_BASE_URL`)."""
    llm_model: str = BUNDLED_LLM_MODEL
    """Model name sent to the endpoint (`DOCGEN_LLM_MODEL`)."""
    llm_api_key: str = LLM_API_KEY_PLACEHOLDER
    """`DOCGEN_LLM_API_KEY`, else `OPENAI_API_KEY`, else a placeholder local servers ignore."""
    llm_temperature: float = 0.7
    """Sampling temperature (`DOCGEN_LLM_TEMPERATURE`)."""
    llm_extra_body: dict[str, Any] | None = None
    """A JSON object merged into every chat-completion request (`DOCGEN_LLM_EXTRA_BODY`), for
    server-specific parameters; e.g. `{"logit_bias": {"2": -100}}` forbids an end-of-sequence
    token (the benchmark forces full-length sections this way). Unset: nothing is added, except
    with the bundled model's default address (`DOCGEN_LLM_BASE_URL` unset), where it is
    `{"logit_bias": {"0": -100, "1": -100, "2": -100}}`: SmolLM2's end-of-text and chat-turn
    tokens are forbidden, so a section is ended by the generator at the first sentence end past
    its target instead of stopping short (docs/quality.md: sections within ±20 % of their target
    80 % -> 90 %). `{}` turns that off."""
    llm_connect_retries: int = 3
    """Retries of a request that failed before its first token: 429, 5xx, refused
    (`DOCGEN_LLM_MAX_RETRIES`), with jittered exponential backoff, honouring Retry-After."""
    llm_request_timeout_s: float = 30.0
    """Budget for the LLM to answer a request's headers (`DOCGEN_LLM_TIMEOUT_S`)."""
    llm_stall_timeout_s: float = 20.0
    """A stream with no token for this long (detected within 1.5x of it) counts as broken
    (`DOCGEN_LLM_STALL_TIMEOUT_S`)."""
    section_attempts: int = 3
    """Attempts per section when the stream breaks mid-way (`DOCGEN_SECTION_ATTEMPTS`)."""
    section_headroom: float = 1.5
    """The LLM's `max_tokens` for a section is this times its `target_tokens`, rounded up
    (`DOCGEN_SECTION_HEADROOM`, at least 1): the stream is ended at the first sentence end
    past the target, and this is the hard cap (`finish_reason: length`) for a model that
    writes a sentence without end."""
    summary_deadline_s: float = 2.0
    """Deadline of the fast summary update (`DOCGEN_SUMMARY_DEADLINE_S`)."""
    summary_refine_deadline_s: float = 20.0
    """How long a refined (LLM) summary may still arrive after the fast one
    (`DOCGEN_SUMMARY_REFINE_DEADLINE_S`)."""
    summary_prompt_wait_s: float = 0.0
    """How long the next section may wait for a refined (LLM) summary of the previous one, so
    its prompt gets the refined text (`DOCGEN_SUMMARY_PROMPT_WAIT_S`); 0, the default, never
    waits: the next section starts right after the fast summary."""
    event_stream_interval_ms: float = 2.0
    """Least time between two messages of an event stream (`DOCGEN_EVENT_STREAM_INTERVAL_MS`,
    0-50; 0: write whatever is ready at once). Events that come while a stream waits out its
    interval go together in its next message, so under load a message carries many events and
    both processes pay per message far less often; a stream that was quiet for the interval
    sends at once, so a lone event is never delayed. At 100 streams x 30 tokens/s, 2 ms took
    the edge's CPU per token from 156 to 130 µs and the generator's from 203 to 189 µs, for
    +1 ms relay delay at the median (one sitting, 30 Nov; docs/performance.md)."""
    run_grace_s: float = 120.0
    """A run with no subscriber is cancelled after this long (`DOCGEN_RUN_GRACE_S`)."""
    run_ttl_s: float = 600.0
    """A finished run stays resumable this long (`DOCGEN_RUN_TTL_S`)."""
    max_active_runs_per_user: int = 4
    """Concurrent unfinished runs per user (`DOCGEN_MAX_RUNS_PER_USER`); with a shared run
    log, per generator replica."""
    max_active_runs: int = 0
    """Unfinished runs this generator writes at once; more get RESOURCE_EXHAUSTED
    (`too_many_runs` at the edge) instead of slowing every run down. 0: no limit. Size it
    from the capacity in docs/performance.md (`DOCGEN_MAX_ACTIVE_RUNS`)."""
    runlog_url: str | None = None
    """`redis://...` (`DOCGEN_RUNLOG_URL`): run logs in Redis Streams, shared by every
    generator, so any replica serves a resume or cancel and runs survive the loss of the
    generator writing them. Unset (the default): runs live in this process's memory."""
    run_lease_s: float = 5.0
    """With Redis: a run whose writer has not renewed its lease for this long is taken over
    by another generator, which restarts the current section (`DOCGEN_RUN_LEASE_S`)."""
    runlog_retry_s: float = 10.0
    """With Redis: how long Redis errors are retried before the writer hands its runs over
    and followers get UNAVAILABLE (`DOCGEN_RUNLOG_RETRY_S`)."""
    max_outline_tokens: int = 32_768
    """Largest sum of `target_tokens` over an outline's sections; more is `invalid_outline`
    (`DOCGEN_MAX_OUTLINE_TOKENS`). Bounds the LLM time one request can buy."""
    planner_url: str | None = None
    """Base URL of the planner (task T-05) that `generate{plan}` reads outlines from
    (`DOCGEN_PLANNER_URL`): `GET {url}/v1/documents/{document_id}/outline` with the caller's
    token (docs/planner.md). Unset: `generate{plan}` is answered `planner_not_configured`;
    `make run` sets it to its development planner."""
    planner_timeout_s: float = 5.0
    """Budget of one request to the planner, connect to last byte (`DOCGEN_PLANNER_TIMEOUT_S`);
    a planner slower than this is `planner_unavailable`."""
    planner_retries: int = 2
    """Retries of a planner request answered 429 or 5xx, or refused, with full-jitter
    exponential backoff from 0.2 s, honouring a short Retry-After
    (`DOCGEN_PLANNER_MAX_RETRIES`)."""
    grpc_tls: GrpcTls | None = None
    """TLS for the gRPC server and the channel to the summary service
    (`DOCGEN_GRPC_TLS_CERT`/`_KEY`/`_CA`); None: plaintext."""
    grpc_peer_auth: PeerAuth | None = None
    """Who may call this server, and the token it sends to the summary service
    (`DOCGEN_GRPC_SERVICE_TOKEN`, `DOCGEN_GRPC_ALLOWED_PEERS`). Beyond loopback one of them is
    required: the generator refuses to start otherwise (docs/security.md)."""
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
            llm_api_key=env_opt("DOCGEN_LLM_API_KEY")
            or env_opt("OPENAI_API_KEY")
            or cls.llm_api_key,
            llm_temperature=env_float("DOCGEN_LLM_TEMPERATURE", cls.llm_temperature, minimum=0),
            llm_extra_body=_llm_extra_body(env_str("DOCGEN_LLM_BASE_URL", cls.llm_base_url)),
            llm_connect_retries=env_int(
                "DOCGEN_LLM_MAX_RETRIES", cls.llm_connect_retries, minimum=0
            ),
            llm_request_timeout_s=env_float(
                "DOCGEN_LLM_TIMEOUT_S", cls.llm_request_timeout_s, minimum=0.1
            ),
            llm_stall_timeout_s=env_float(
                "DOCGEN_LLM_STALL_TIMEOUT_S", cls.llm_stall_timeout_s, minimum=0.05
            ),
            section_attempts=env_int("DOCGEN_SECTION_ATTEMPTS", cls.section_attempts, minimum=1),
            section_headroom=env_float(
                "DOCGEN_SECTION_HEADROOM", cls.section_headroom, minimum=1.0
            ),
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
            event_stream_interval_ms=env_float(
                "DOCGEN_EVENT_STREAM_INTERVAL_MS",
                cls.event_stream_interval_ms,
                minimum=0,
                maximum=50,
            ),
            max_active_runs_per_user=env_int(
                "DOCGEN_MAX_RUNS_PER_USER", cls.max_active_runs_per_user, minimum=1
            ),
            max_active_runs=env_int("DOCGEN_MAX_ACTIVE_RUNS", cls.max_active_runs, minimum=0),
            runlog_url=env_opt("DOCGEN_RUNLOG_URL"),
            run_lease_s=env_float("DOCGEN_RUN_LEASE_S", cls.run_lease_s, minimum=0.3),
            runlog_retry_s=env_float("DOCGEN_RUNLOG_RETRY_S", cls.runlog_retry_s, minimum=0),
            max_outline_tokens=env_int(
                "DOCGEN_MAX_OUTLINE_TOKENS", cls.max_outline_tokens, minimum=1
            ),
            planner_url=_env_http_url("DOCGEN_PLANNER_URL"),
            planner_timeout_s=env_float(
                "DOCGEN_PLANNER_TIMEOUT_S", cls.planner_timeout_s, minimum=0.01
            ),
            planner_retries=env_int("DOCGEN_PLANNER_MAX_RETRIES", cls.planner_retries, minimum=0),
            grpc_tls=GrpcTls.from_env(),
            grpc_peer_auth=PeerAuth.from_env(),
            metrics_port=env_int("DOCGEN_GENERATOR_METRICS_PORT", cls.metrics_port, minimum=0),
            shutdown_drain_s=env_float(
                "DOCGEN_GENERATOR_SHUTDOWN_DRAIN_S", cls.shutdown_drain_s, minimum=0
            ),
            shutdown_grace_s=env_float(
                "DOCGEN_GENERATOR_SHUTDOWN_GRACE_S", cls.shutdown_grace_s, minimum=0
            ),
        )


# SmolLM2's <|endoftext|>, <|im_start|> and <|im_end|> (ids read from its GGUF vocabulary).
BUNDLED_LLM_EXTRA_BODY: dict[str, Any] = {"logit_bias": {"0": -100, "1": -100, "2": -100}}


def _llm_extra_body(base_url: str) -> dict[str, Any] | None:
    """`DOCGEN_LLM_EXTRA_BODY`; unset, the bundled model's end-token ban, at its address only."""
    value = _env_json_object("DOCGEN_LLM_EXTRA_BODY")
    if value is None and base_url == BUNDLED_LLM_BASE_URL:
        return dict(BUNDLED_LLM_EXTRA_BODY)
    return value


def _env_json_object(name: str) -> dict[str, Any] | None:
    """A JSON object from the environment (None when unset), failing loudly with its name."""
    raw = env_opt(name)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ConfigError(f"{name} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _env_http_url(name: str) -> str | None:
    """An http(s) base URL from the environment, without its trailing slash (None when unset)."""
    raw = env_opt(name)
    if raw is None:
        return None
    scheme, _, rest = raw.partition("://")
    if scheme not in ("http", "https") or not rest.strip("/"):
        raise ConfigError(f"{name}={raw!r} is not an http:// or https:// URL")
    return raw.rstrip("/")
