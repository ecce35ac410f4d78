"""The planner client against a real HTTP planner on port 0: what it sends, what it accepts,
and the documented error for every way the planner can fail (docs/planner.md)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.generator.planner import (
    MAX_BODY_BYTES,
    PlanForbidden,
    PlanInvalid,
    PlannerClient,
    PlannerNotConfigured,
    PlannerRetry,
    PlannerUnavailable,
    PlanNotFound,
)
from tests.support.planner import PlanReply, ScriptedPlanner

OUTLINE = {
    "document_id": "doc-7",
    "title": "Cómo hornear pan",
    "sections": [
        {"id": "masa", "title": "La masa", "brief": "Harina y agua", "target_tokens": 40},
        {"id": "horno", "title": "El horno", "target_tokens": 30},
    ],
}
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"
FAST_RETRY = PlannerRetry(max_retries=2, base_delay_s=0.01, max_delay_s=0.02)


@pytest.fixture
async def planner() -> AsyncIterator[ScriptedPlanner]:
    planner = ScriptedPlanner(outlines={"doc-7": OUTLINE})
    await planner.start()
    yield planner
    await planner.stop()


@pytest.fixture
async def client(planner: ScriptedPlanner) -> AsyncIterator[PlannerClient]:
    client = PlannerClient(planner.url, timeout_s=0.5, retry=FAST_RETRY)
    yield client
    await client.close()


async def test_the_outline_is_read_with_the_callers_token(
    planner: ScriptedPlanner, client: PlannerClient
) -> None:
    outline = await client.fetch_outline("doc-7", token=TOKEN)
    assert outline.document_id == "doc-7"
    assert outline.title == "Cómo hornear pan"
    assert [(s.id, s.title, s.brief, s.target_tokens) for s in outline.sections] == [
        ("masa", "La masa", "Harina y agua", 40),
        ("horno", "El horno", "", 30),
    ]
    [request] = planner.requests
    assert request.document_id == "doc-7"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"


async def test_an_id_is_one_path_segment_whatever_it_holds(
    planner: ScriptedPlanner, client: PlannerClient
) -> None:
    odd = "a/b?c#d e"
    planner.outlines[odd] = {**OUTLINE, "document_id": odd}
    outline = await client.fetch_outline(odd, token=TOKEN)
    assert outline.document_id == odd
    assert planner.requests[0].document_id == odd


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, PlanNotFound), (410, PlanNotFound), (401, PlanForbidden), (403, PlanForbidden)],
)
async def test_refusals_are_not_retried(
    planner: ScriptedPlanner, client: PlannerClient, status: int, error: type[Exception]
) -> None:
    planner.script = lambda _n, _id: PlanReply(status=status)
    with pytest.raises(error) as raised:
        await client.fetch_outline("doc-7", token=TOKEN)
    assert len(planner.requests) == 1
    assert "doc-7" in str(raised.value)


async def test_an_unknown_id_is_plan_not_found(
    planner: ScriptedPlanner, client: PlannerClient
) -> None:
    with pytest.raises(PlanNotFound) as raised:
        await client.fetch_outline("nope", token=TOKEN)
    assert raised.value.code == "plan_not_found"
    assert not raised.value.retryable


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_overload_and_server_errors_are_retried_then_unavailable(
    planner: ScriptedPlanner, client: PlannerClient, status: int
) -> None:
    planner.script = lambda _n, _id: PlanReply(status=status)
    with pytest.raises(PlannerUnavailable) as raised:
        await client.fetch_outline("doc-7", token=TOKEN)
    assert len(planner.requests) == 1 + FAST_RETRY.max_retries
    assert raised.value.code == "planner_unavailable"
    assert raised.value.retryable
    assert f"HTTP {status}" in str(raised.value)


async def test_a_503_then_200_succeeds(planner: ScriptedPlanner, client: PlannerClient) -> None:
    planner.script = lambda n, _id: PlanReply(status=503) if n == 0 else PlanReply()
    outline = await client.fetch_outline("doc-7", token=TOKEN)
    assert outline.title == OUTLINE["title"]
    assert len(planner.requests) == 2
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in planner.requests)


async def test_a_short_retry_after_is_honoured(
    planner: ScriptedPlanner, client: PlannerClient
) -> None:
    planner.script = lambda n, _id: (
        PlanReply(status=429, retry_after="0") if n == 0 else PlanReply()
    )
    assert (await client.fetch_outline("doc-7", token=TOKEN)).document_id == "doc-7"
    assert len(planner.requests) == 2


async def test_a_slow_planner_is_unavailable_without_a_retry(
    planner: ScriptedPlanner, client: PlannerClient
) -> None:
    planner.script = lambda _n, _id: PlanReply(delay_s=5.0)
    with pytest.raises(PlannerUnavailable, match=r"did not answer within 0\.5 s"):
        await client.fetch_outline("doc-7", token=TOKEN)
    assert len(planner.requests) == 1


async def test_a_refused_connection_is_retried_then_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = PlannerClient(f"http://127.0.0.1:{port}", timeout_s=0.5, retry=FAST_RETRY)
    try:
        with pytest.raises(PlannerUnavailable, match="cannot connect"):
            await client.fetch_outline("doc-7", token=TOKEN)
    finally:
        await client.close()


async def test_an_unexpected_status_is_unavailable_at_once(
    planner: ScriptedPlanner, client: PlannerClient
) -> None:
    planner.script = lambda _n, _id: PlanReply(status=400)
    with pytest.raises(PlannerUnavailable, match="HTTP 400"):
        await client.fetch_outline("doc-7", token=TOKEN)
    assert len(planner.requests) == 1


GARBAGE: list[tuple[str, PlanReply, str]] = [
    ("not json", PlanReply(raw=b"<html>oops</html>"), "is not JSON"),
    ("a list", PlanReply(body=[OUTLINE]), "is not a valid outline"),
    ("no sections", PlanReply(body={"document_id": "doc-7", "title": "x"}), "sections"),
    (
        "bad target",
        PlanReply(body={**OUTLINE, "sections": [{"id": "a", "title": "A", "target_tokens": 0}]}),
        "target_tokens",
    ),
    (
        "extra field",
        PlanReply(body={**OUTLINE, "owner": "someone"}),
        "Additional properties",
    ),
    ("another document", PlanReply(body={**OUTLINE, "document_id": "doc-8"}), "another"),
    ("huge", PlanReply(raw=b" " * (MAX_BODY_BYTES + 1)), "over"),
]


@pytest.mark.parametrize(("name", "reply", "message"), GARBAGE, ids=[g[0] for g in GARBAGE])
async def test_a_body_that_is_not_an_outline_is_invalid_outline(
    planner: ScriptedPlanner, client: PlannerClient, name: str, reply: PlanReply, message: str
) -> None:
    planner.script = lambda _n, _id: reply
    with pytest.raises(PlanInvalid) as raised:
        await client.fetch_outline("doc-7", token=TOKEN)
    assert raised.value.code == "invalid_outline"
    assert message in str(raised.value)
    assert len(planner.requests) == 1


async def test_without_a_planner_url_nothing_is_sent() -> None:
    client = PlannerClient(None, timeout_s=0.5)
    with pytest.raises(PlannerNotConfigured) as raised:
        await client.fetch_outline("doc-7", token=TOKEN)
    assert raised.value.code == "planner_not_configured"
    assert "DOCGEN_PLANNER_URL" in str(raised.value)
    await client.close()


async def test_no_token_means_no_authorization_header(
    planner: ScriptedPlanner, client: PlannerClient
) -> None:
    await client.fetch_outline("doc-7", token=None)
    assert "Authorization" not in planner.requests[0].headers


async def test_the_token_never_reaches_a_log(
    planner: ScriptedPlanner, client: PlannerClient, caplog: pytest.LogCaptureFixture
) -> None:
    planner.script = lambda n, _id: PlanReply(status=503) if n == 0 else PlanReply(status=403)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PlanForbidden) as raised:
        await client.fetch_outline("doc-7", token=TOKEN)
    logged: list[Any] = [r.getMessage() for r in caplog.records]
    logged += [json.dumps(r.__dict__, default=str) for r in caplog.records]
    assert any("retried" in line for line in logged)
    assert not [line for line in logged if TOKEN in line or TOKEN[:20] in line]
    assert TOKEN not in str(raised.value)
