"""OpenTelemetry spans, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (off by default).

The standard OTEL_* variables configure the exporter. Spans are propagated across the gRPC
hops by the instrumentations (W3C traceparent); docgen's own trace id, which is on every log
line, is attached to spans as `docgen.trace_id` where it is known."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


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
