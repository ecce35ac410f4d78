"""`generate{plan}` end to end: real edge, generator and summary, the scripted LLM, and a real
HTTP planner on port 0 (docs/planner.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc

from tests.support.planner import PlanReply, ScriptedPlanner
from tests.support.scripted_llm import ScriptedLLM
from tests.support.stack import ProtocolClient, Stack, sections_text, start_stack

PLANNED = {
    "document_id": "plan-42",
    "title": "Bees on city roofs",
    "sections": [
        {"id": "why", "title": "Why rooftop hives", "brief": "Pollination", "target_tokens": 30},
        {"id": "how", "title": "Keeping them calm", "brief": "Smoke and care", "target_tokens": 30},
    ],
}


@pytest.fixture
async def planner() -> AsyncIterator[ScriptedPlanner]:
    planner = ScriptedPlanner(outlines={"plan-42": PLANNED})
    await planner.start()
    yield planner
    await planner.stop()


@pytest.fixture
async def stack(planner: ScriptedPlanner) -> AsyncIterator[Stack]:
    stack = await start_stack(
        ScriptedLLM(),
        generator={"planner_url": planner.url, "planner_timeout_s": 0.5, "planner_retries": 1},
    )
    yield stack
    await stack.close()


async def answer_to(client: ProtocolClient, request_id: str) -> dict[str, Any]:
    """The first frame answering this request: `run_started` or an `error`."""
    frames = await client.recv_until(
        lambda f: f.get("request_id") == request_id and f["type"] in ("run_started", "error"),
        timeout=15,
    )
    return frames[-1]


async def test_a_run_is_written_from_the_planners_outline_with_the_users_token(
    stack: Stack, planner: ScriptedPlanner
) -> None:
    token = stack.token("alice")
    client = await stack.connect(token)
    await client.send({"type": "generate", "plan": {"document_id": "plan-42"}, "request_id": "p1"})
    frames = await client.run_to_end()

    started = next(f for f in frames if f["type"] == "run_started")
    assert started["plan_source"] == "planner"
    assert started["document_id"] == "plan-42"
    assert started["title"] == "Bees on city roofs"
    assert started["sections"] == ["why", "how"]
    assert [f["title"] for f in frames if f["type"] == "section_start"] == [
        "Why rooftop hives",
        "Keeping them calm",
    ]
    assert frames[-1]["status"] == "completed"
    assert set(sections_text(frames)) == {"why", "how"}
    # The LLM was asked for the planner's sections, and the planner was asked with the user's
    # own token.
    prompts = [r.prompt_text for r in stack.llm.requests]
    assert any("Why rooftop hives" in p for p in prompts)
    assert any("Keeping them calm" in p for p in prompts)
    [request] = planner.requests
    assert request.document_id == "plan-42"
    assert request.headers["Authorization"] == f"Bearer {token}"


async def test_an_inline_outline_says_so(stack: Stack, planner: ScriptedPlanner) -> None:
    client = await stack.connect()
    await client.send({"type": "generate", "outline": PLANNED, "request_id": "i1"})
    started = await answer_to(client, "i1")
    assert started["type"] == "run_started"
    assert started["plan_source"] == "inline"
    assert planner.requests == []


REFUSALS: list[tuple[str, PlanReply, str, bool]] = [
    ("404", PlanReply(status=404), "plan_not_found", False),
    ("401", PlanReply(status=401), "plan_forbidden", False),
    ("403", PlanReply(status=403), "plan_forbidden", False),
    ("503", PlanReply(status=503), "planner_unavailable", True),
    ("slow", PlanReply(delay_s=3.0), "planner_unavailable", True),
    ("garbage", PlanReply(raw=b"{not json"), "invalid_outline", False),
    ("wrong shape", PlanReply(body={"title": "x", "sections": []}), "invalid_outline", False),
    (
        "duplicate ids",
        PlanReply(body={**PLANNED, "sections": [PLANNED["sections"][0]] * 2}),
        "invalid_outline",
        False,
    ),
]


@pytest.mark.parametrize(
    ("name", "reply", "code", "retryable"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
async def test_a_refused_plan_is_the_documented_error_and_never_reaches_the_llm(
    stack: Stack,
    planner: ScriptedPlanner,
    name: str,
    reply: PlanReply,
    code: str,
    retryable: bool,
) -> None:
    planner.script = lambda _n, _id: reply
    client = await stack.connect()
    await client.send({"type": "generate", "plan": {"document_id": "plan-42"}, "request_id": "r"})
    answer = await answer_to(client, "r")
    assert answer["type"] == "error", answer
    assert (answer["code"], answer["retryable"]) == (code, retryable)
    assert "seq" not in answer
    assert stack.llm.requests == []
    # 429/5xx are retried (planner_retries=1 here); everything else is asked once.
    assert len(planner.requests) == (2 if name == "503" else 1)


async def test_a_503_then_200_is_retried_and_the_run_completes(
    stack: Stack, planner: ScriptedPlanner
) -> None:
    planner.script = lambda n, _id: PlanReply(status=503) if n == 0 else PlanReply()
    client = await stack.connect()
    await client.send({"type": "generate", "plan": {"document_id": "plan-42"}, "request_id": "r"})
    frames = await client.run_to_end()
    assert frames[-1]["status"] == "completed"
    assert len(planner.requests) == 2


async def test_an_outline_and_a_plan_together_are_an_invalid_frame(
    stack: Stack, planner: ScriptedPlanner
) -> None:
    client = await stack.connect()
    await client.send(
        {
            "type": "generate",
            "outline": PLANNED,
            "plan": {"document_id": "plan-42"},
            "request_id": "both",
        }
    )
    answer = await answer_to(client, "both")
    assert answer["code"] == "invalid_frame"
    assert planner.requests == [] and stack.llm.requests == []


async def test_without_a_planner_a_plan_is_planner_not_configured() -> None:
    stack = await start_stack(ScriptedLLM())
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "plan": {"document_id": "x"}, "request_id": "n"})
        answer = await answer_to(client, "n")
        assert (answer["code"], answer["retryable"]) == ("planner_not_configured", False)
        assert stack.llm.requests == []
    finally:
        await stack.close()


async def test_grpc_start_run_takes_a_plan_and_the_token_from_metadata(
    stack: Stack, planner: ScriptedPlanner
) -> None:
    request = generator_pb2.StartRunRequest(
        plan=generator_pb2.PlanReference(document_id="plan-42"), user_id="svc", request_id="g1"
    )
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        events = [
            r.event
            async for r in stub.StartRun(
                request, metadata=(("authorization", "Bearer svc-token"),), timeout=30
            )
        ]
        assert events[0].run_started.plan_source == events_pb2.PLAN_SOURCE_PLANNER
        assert events[-1].run_end.status == events_pb2.RUN_STATUS_COMPLETED
        assert planner.requests[-1].headers["Authorization"] == "Bearer svc-token"

        # No token: none is sent, and this planner refuses; the code rides in the trailers.
        planner.script = lambda _n, _id: PlanReply(status=401)
        request.request_id = "g2"  # "g1" again would replay the first run (idempotent)
        call = stub.StartRun(request, timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert ("docgen-error-code", "plan_forbidden") in tuple(raised.value.trailing_metadata())
        assert "Authorization" not in planner.requests[-1].headers


async def test_the_forwarded_token_is_never_logged(
    stack: Stack, planner: ScriptedPlanner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = stack.token("carol")
    client = await stack.connect(token)
    planner.script = lambda n, _id: PlanReply(status=503) if n == 0 else PlanReply()
    await client.send({"type": "generate", "plan": {"document_id": "plan-42"}, "request_id": "t"})
    await client.run_to_end()
    planner.script = lambda _n, _id: PlanReply(status=403)
    await client.send({"type": "generate", "plan": {"document_id": "plan-42"}, "request_id": "u"})
    assert (await answer_to(client, "u"))["code"] == "plan_forbidden"
    assert planner.requests[0].headers["Authorization"] == f"Bearer {token}"
    signature = token.rsplit(".", 1)[-1]
    for record in caplog.records:
        line = record.getMessage() + json.dumps(record.__dict__, default=str)
        assert signature not in line, f"{record.name} logged the token"
