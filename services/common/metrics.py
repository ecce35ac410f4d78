"""Every Prometheus metric of docgen, in one place so names, labels and buckets stay
consistent. Labels are bounded sets (status, code, method, kind) — never user or run ids.
Buckets put the task card's targets (150 ms handshake, 20 s section, 500 ms summary) on
bucket edges, so SLO queries are exact."""

from __future__ import annotations

import logging

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

# --- edge ---------------------------------------------------------------------------------
WS_HANDSHAKE_SECONDS = Histogram(
    "docgen_ws_handshake_seconds",
    "Server-side time to accept a WebSocket handshake (auth included), seconds.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0),
)
WS_HANDSHAKE_REJECTIONS = Counter(
    "docgen_ws_handshake_rejections_total",
    "Handshakes refused: by HTTP status, or by close code when a browser's refusal is an "
    "upgrade closed at once.",
    ["status"],
)
WS_OPEN_SOCKETS = Gauge("docgen_ws_open_sockets", "WebSockets currently open.")
WS_CLOSES = Counter("docgen_ws_closes_total", "WebSockets closed, by close code.", ["code"])
RELAY_LATENCY_SECONDS = Histogram(
    "docgen_relay_latency_seconds",
    "From the generator appending a run event (LLM token received) to the edge writing its "
    "frame to the socket, seconds (millisecond resolution).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
ERRORS = Counter("docgen_errors_total", "Error frames sent, by code.", ["code"])

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
SUMMARY_LATENCY_SECONDS = Histogram(
    "docgen_summary_latency_seconds",
    "From section_end to the summary_update covering it, seconds.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0),
)
RUNS = Counter("docgen_runs_total", "Runs ended, by final status.", ["status"])
RUN_ERRORS = Counter("docgen_run_errors_total", "Error events appended to runs, by code.", ["code"])
LLM_RETRIES = Counter(
    "docgen_llm_retries_total",
    "LLM retries: `request` before the first token, `section` after a broken stream.",
    ["kind"],
)
ACTIVE_RUNS = Gauge("docgen_active_runs", "Runs being written.")
RUN_SUBSCRIBERS = Gauge("docgen_run_subscribers", "Streams following a run.")

# --- summary ------------------------------------------------------------------------------
SUMMARY_UPDATE_SECONDS = Histogram(
    "docgen_summary_update_seconds",
    "Summary service time per update, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 20.0),
)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serves /metrics on its own port (generator and summary; the edge serves it itself).
    A busy port costs the metrics, not the service: it is logged as an error."""
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
