"""OpenTelemetry spans, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (off by default).

The standard OTEL_* variables configure the exporter. Spans are propagated across the gRPC
hops by the instrumentations (W3C traceparent); docgen's own trace id, which is on every log
line, is attached to spans as `docgen.trace_id` where it is known."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

# Span attributes that carry a request's query string. A client that sends its token in the URL
# by mistake is refused by the edge, but the server span of that request is recorded first.
QUERY_ATTRIBUTES = ("url.query", "http.target", "http.url", "url.full")
REDACTED = "[redacted]"


def redact_query(key: str, value: str) -> str:
    """`value` with its whole query string replaced: traces never need it, logs never keep it."""
    if key == "url.query":
        return REDACTED if value else value
    path, mark, query = value.partition("?")
    return f"{path}?{REDACTED}" if mark and query else value


def redacting_processor() -> Any:
    """A span processor that rewrites the query attributes as a span starts (the aiohttp
    server instrumentation sets them then), before any exporter sees them."""
    from opentelemetry.sdk.trace import SpanProcessor

    class RedactQueries(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for key in QUERY_ATTRIBUTES:
                value = (span.attributes or {}).get(key)
                if isinstance(value, str):
                    span.set_attribute(key, redact_query(key, value))

    return RedactQueries()


def configure_tracing(service: str) -> bool:
    """Installs the SDK and the grpc/aiohttp instrumentations; returns whether it did.
    Call before creating gRPC servers, channels or the aiohttp app."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
        from opentelemetry.instrumentation.grpc import (
            GrpcAioInstrumentorClient,
            GrpcAioInstrumentorServer,
        )
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.error(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install -e '.[otel]'; continuing without spans"
        )
        return False
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"docgen-{service}"}))
    provider.add_span_processor(redacting_processor())  # first: before the exporter's
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    AioHttpServerInstrumentor().instrument()
    log.info("OpenTelemetry spans exported to %s", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    return True


def shutdown_tracing() -> None:
    """Flushes pending spans (a no-op when tracing is off)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()
