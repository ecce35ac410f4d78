"""Every Prometheus metric of docgen, in one place so names, labels and buckets stay
consistent. Every label takes its values from a fixed set written here (`BoundedLabels`);
anything else, whoever chose it (a client's close code, a peer's method name), is counted as
`other`, so no input can grow the number of series. Never user or run ids.
Buckets put the task card's targets (150 ms handshake, 20 s section, 500 ms summary) on
bucket edges, so SLO queries are exact."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from importlib.resources import files
from typing import Generic, TypeVar

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

# `*_created` series double a scrape's size and nothing of docgen reads them.
prometheus_client.disable_created_metrics()

OTHER = "other"
"""The one label value that stands for every value outside a label's set."""

_Metric = TypeVar("_Metric", Counter, Histogram)


class BoundedLabels(Generic[_Metric]):
    """A labelled metric whose every label has a fixed set of values. A value outside its
    set becomes `other`: 62,538 client-chosen close codes once made /metrics 6.4 MB and a
    scrape 876 ms long, blocking the edge; now they are one series."""

    def __init__(self, metric: _Metric, *allowed: Iterable[str]) -> None:
        names = metric._labelnames
        if len(allowed) != len(names):
            raise ValueError(f"{metric._name}: one value set per label {names}")
        self.metric: _Metric = metric
        self.allowed = tuple(frozenset(values) | {OTHER} for values in allowed)

    def labels(self, *values: object) -> _Metric:
        return self.metric.labels(
            *(
                text if (text := str(value)) in allowed else OTHER
                for value, allowed in zip(values, self.allowed, strict=True)
            )
        )


def _contract_error_codes() -> frozenset[str]:
    """Every error code the protocol defines: the enums of the contract's error schema."""
    schema = json.loads(files("services.contract").joinpath("server/error.json").read_text())
    codes: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            code = node.get("code")
            if isinstance(code, dict):
                codes.update(code.get("enum", ()))
            for child in node.values():
                collect(child)
        elif isinstance(node, list):
            for child in node:
                collect(child)

    collect(schema)
    return frozenset(codes)


ERROR_CODES = _contract_error_codes()
# RFC 6455's codes, and docgen's own (docs/protocol.md): 4000 server restart, 4001 slow
# consumer, 4002/4003 handshake refusals to retry, 4500 token expired, 4501 policy, 4502-4505
# handshake refusals not to retry without a new token.
CLOSE_CODES = frozenset(
    str(code) for code in (*range(1000, 1016), *range(4000, 4004), *range(4500, 4506))
)
# HTTP statuses of a refused handshake (408: headers too slow, services/edge/http_guard.py),
# and the close codes of a refusal a browser can read.
REJECTION_STATUSES = frozenset({"400", "401", "403", "408", "426", "429", "503"}) | CLOSE_CODES
RUN_STATUSES = frozenset({"completed", "failed", "cancelled"})
SUMMARY_METHODS = frozenset({"extractive", "llm"})
RETRY_KINDS = frozenset({"request", "section"})

# --- edge ---------------------------------------------------------------------------------
WS_HANDSHAKE_SECONDS = Histogram(
    "docgen_ws_handshake_seconds",
    "Server-side time to accept a WebSocket handshake (auth included), seconds.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0),
)
WS_HANDSHAKE_REJECTIONS = BoundedLabels(
    Counter(
        "docgen_ws_handshake_rejections_total",
        "Handshakes refused: by HTTP status, or by close code when a browser's refusal is an "
        "upgrade closed at once.",
        ["status"],
    ),
    REJECTION_STATUSES,
)
WS_OPEN_SOCKETS = Gauge("docgen_ws_open_sockets", "WebSockets currently open.")
WS_CLOSES = BoundedLabels(
    Counter("docgen_ws_closes_total", "WebSockets closed, by close code.", ["code"]),
    CLOSE_CODES,
)
RELAY_LATENCY_SECONDS = Histogram(
    "docgen_relay_latency_seconds",
    "From the generator appending a run event (LLM token received) to the edge writing its "
    "frame to the socket, seconds (millisecond resolution).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
ERRORS = BoundedLabels(
    Counter("docgen_errors_total", "Error frames sent, by code.", ["code"]), ERROR_CODES
)

# --- generator ----------------------------------------------------------------------------
SECTION_TTFT_SECONDS = Histogram(
    "docgen_section_ttft_seconds",
    "From the LLM request to its first token, seconds.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0),
)
SECTION_DURATION_SECONDS = Histogram(
    "docgen_section_duration_seconds",
    "From section_start to section_end, seconds.",
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0),
)
SECTION_OUTPUT_TOKENS = Histogram(
    "docgen_section_output_tokens",
    "LLM output tokens per finished section.",
    buckets=(16, 32, 64, 128, 256, 512, 600, 1024, 2048, 4096),
)
SUMMARY_LATENCY_SECONDS = BoundedLabels(
    Histogram(
        "docgen_summary_latency_seconds",
        "From section_end to the summary_update covering it, seconds.",
        ["method"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0),
    ),
    SUMMARY_METHODS,
)
RUNS = BoundedLabels(
    Counter("docgen_runs_total", "Runs ended, by final status.", ["status"]), RUN_STATUSES
)
RUN_ERRORS = BoundedLabels(
    Counter("docgen_run_errors_total", "Error events appended to runs, by code.", ["code"]),
    ERROR_CODES,
)
LLM_RETRIES = BoundedLabels(
    Counter(
        "docgen_llm_retries_total",
        "LLM retries: `request` before the first token, `section` after a broken stream.",
        ["kind"],
    ),
    RETRY_KINDS,
)
ACTIVE_RUNS = Gauge("docgen_active_runs", "Runs being written.")
RUN_SUBSCRIBERS = Gauge("docgen_run_subscribers", "Streams following a run.")

# --- summary ------------------------------------------------------------------------------
SUMMARY_UPDATE_SECONDS = BoundedLabels(
    Histogram(
        "docgen_summary_update_seconds",
        "Summary service time per update, by method.",
        ["method"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 20.0),
    ),
    SUMMARY_METHODS,
)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serves /metrics on its own port, in a thread, never on a service's public port: the
    edge's 9100, the generator's 9101, the summary's 9102. A scrape does not wait for the
    event loop, nor the loop for a scrape beyond the GIL. A busy port costs the metrics, not
    the service: it is logged as an error."""
    if port <= 0:
        return
    try:
        prometheus_client.start_http_server(port, addr=host)
    except OSError as error:
        logging.getLogger(__name__).error(
            "cannot serve metrics on %s:%d (%s); set the service's *_METRICS_PORT to a free "
            "port, or 0 to disable",
            host,
            port,
            error,
        )


def render_latest() -> tuple[bytes, str]:
    return prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST
