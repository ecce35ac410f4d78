"""Metric labels are bounded, and the edge's /metrics is not on its public port (issue 18,
item 2). The report: one user closed sockets with 62,538 distinct close codes in 92 s, each a
new `docgen_ws_closes_total{code=…}` series; /metrics grew to 6.4 MB and a scrape took 876 ms
on the edge's event loop, on the port the Ingress routes."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import prometheus_client
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common import metrics
from services.edge.frames import REFUSAL_CLOSE_CODES
from services.edge.session import CloseCode
from tests.support.processes import free_port, start_edge_process, stop_process
from tests.support.raw_ws import RawWebSocket
from tests.support.stack import Stack


def series(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of metric family `name` in this process's registry, by label set."""
    text = metrics.render_latest()[0].decode()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total"
    }


def test_every_labelled_metric_takes_its_values_from_a_fixed_set() -> None:
    """The audit: no labelled metric of docgen is used bare, and no input, however varied,
    makes more series than its label sets allow."""
    bounded = [
        value for value in vars(metrics).values() if isinstance(value, metrics.BoundedLabels)
    ]
    wrapped = {id(b.metric) for b in bounded}
    for name, value in vars(metrics).items():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase) and value._labelnames:
            assert id(value) in wrapped, f"{name} has labels but no fixed value set"
    rng = random.Random(18)
    hostile: list[object] = [None, "", "other", "x" * 500, *range(0, 70_000, 7)]
    hostile += [f"user-{rng.random()}" for _ in range(2000)]
    for metric in bounded:
        for value in hostile:
            metric.labels(*([value] * len(metric.allowed)))
        children = metric.metric._metrics  # the series created so far
        limit = 1
        for allowed in metric.allowed:
            limit *= len(allowed)
        assert len(children) <= limit, metric.metric
        for labels in children:
            assert all(v in allowed for v, allowed in zip(labels, metric.allowed, strict=True))


def test_the_label_sets_hold_every_code_the_services_send() -> None:
    protocol_codes = [v for k, v in vars(CloseCode).items() if k.isupper()]
    assert protocol_codes
    for code in (*protocol_codes, *REFUSAL_CLOSE_CODES.values(), 1000, 1006, 1009, 1011):
        assert str(int(code)) in metrics.CLOSE_CODES
        assert str(int(code)) in metrics.REJECTION_STATUSES
    for status in ("400", "401", "403", "426", "429", "503"):
        assert status in metrics.REJECTION_STATUSES
    assert {"invalid_token", "too_many_runs", "run_not_found", "summary_unavailable"} <= (
        metrics.ERROR_CODES
    )


async def test_client_chosen_close_codes_are_one_series(stack: Stack) -> None:
    """The reproduction, scaled down: sockets closed by the client with codes of its choosing
    (3000-4999 are free for applications) add to `other`, never a series of their own."""
    before = series("docgen_ws_closes")
    other_before = before.get((("code", "other"),), 0.0)
    token = stack.token("close-code-chooser")
    codes = [3000 + n * 37 for n in range(40)]
    for code in codes:
        raw = await RawWebSocket.connect(
            "127.0.0.1", stack.edge_port, protocols=f"docgen.v1, bearer.{token}"
        )
        try:
            assert raw.status == 101
            raw.send(code.to_bytes(2, "big") + b"bye", opcode=0x8)
            while (await asyncio.wait_for(raw.recv(), 10)).opcode != 0x8:
                pass
        finally:
            raw.close()
    deadline = asyncio.get_running_loop().time() + 10
    while series("docgen_ws_closes").get((("code", "other"),), 0.0) < other_before + len(codes):
        assert asyncio.get_running_loop().time() < deadline, series("docgen_ws_closes")
        await asyncio.sleep(0.05)
    after = series("docgen_ws_closes")
    assert not any(str(code) in dict(labels).values() for labels in after for code in codes)
    assert set(after) - set(before) <= {(("code", "other"),)}


@pytest.mark.timeout(120)
async def test_the_edge_serves_metrics_on_its_own_loopback_port_not_the_public_one() -> None:
    metrics_port = free_port()
    edge, port = await start_edge_process("127.0.0.1:9", DOCGEN_EDGE_METRICS_PORT=str(metrics_port))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 404
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                assert response.status == 200
                text = await response.text()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"docgen_ws_handshake_seconds", "docgen_ws_open_sockets"} <= names
        # Loopback only by default: the port is bound to 127.0.0.1, not every interface.
        connections = [
            c
            for c in psutil.Process(edge.pid).net_connections("tcp")
            if c.status == "LISTEN" and c.laddr.port == metrics_port
        ]
        assert [c.laddr.ip for c in connections] == ["127.0.0.1"]
    finally:
        await stop_process(edge)
