"""Contract revision 2 (DESIGN.md), end to end against the real edge, generator and summary
service with the scripted LLM: refusals a browser can read, honest endings, and the gRPC
side (AttachRun's first `run` message, ListRuns, idempotent StartRun, CancelRun's status)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc, outline_pb2

from services.edge.frames import REFUSAL_CLOSE_CODES
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.stack import OUTLINE_3, Stack, sections_text, start_stack

PAGE_ORIGIN = "http://page.example"


def outline_message(outline: dict[str, Any] = OUTLINE_3) -> outline_pb2.Outline:
    return outline_pb2.Outline(
        document_id=outline["document_id"],
        title=outline["title"],
        sections=[outline_pb2.OutlineSection(**s) for s in outline["sections"]],
    )


# --- refusals a browser can read ------------------------------------------------------------


@pytest.fixture
async def browser_stack() -> AsyncIterator[Stack]:
    stack = await start_stack(
        edge={"allowed_origins": (PAGE_ORIGIN,), "max_sockets_per_user": 1}
    )
    yield stack
    await stack.close()


async def handshake(
    stack: Stack, token: str | None, *, origin: str | None
) -> tuple[int | None, str, int | None]:
    """(close code, close reason, HTTP status of a refused upgrade) of one handshake."""
    headers = {"Origin": origin} if origin else {}
    protocols = ["docgen.v1"] + ([f"bearer.{token}"] if token else [])
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(stack.ws_url, protocols=protocols, headers=headers)
        except aiohttp.WSServerHandshakeError as error:
            return None, "", error.status
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE, message
        await ws.close()
        return message.data, message.extra or "", None


@pytest.mark.parametrize(
    ("case", "code"),
    [("expired", "token_expired"), ("missing", "missing_token"), ("garbage", "invalid_token"),
     ("future", "token_not_yet_valid")],
)
async def test_a_browser_refused_for_its_token_reads_the_code_from_the_close(
    browser_stack: Stack, case: str, code: str
) -> None:
    import time

    now = int(time.time())
    token = {
        "expired": browser_stack.token("alice", exp=now - 3600, iat=now - 7200),
        "missing": None,
        "garbage": "not-a-jwt",
        "future": browser_stack.token("alice", nbf=now + 3600),
    }[case]
    close_code, reason, status = await handshake(browser_stack, token, origin=PAGE_ORIGIN)
    assert (close_code, reason, status) == (REFUSAL_CLOSE_CODES[code], code, None)
    assert 4500 <= REFUSAL_CLOSE_CODES[code] <= 4999
    # Without Origin (not a browser) the v1 HTTP answer stays.
    assert await handshake(browser_stack, token, origin=None) == (None, "", 401)


async def test_a_disallowed_origin_keeps_its_403(browser_stack: Stack) -> None:
    result = await handshake(browser_stack, browser_stack.token(), origin="http://evil.example")
    assert result == (None, "", 403)


async def test_too_many_connections_from_a_browser_is_a_try_later_close(
    browser_stack: Stack,
) -> None:
    first = await browser_stack.connect(origin=PAGE_ORIGIN)
    close_code, reason, status = await handshake(
        browser_stack, browser_stack.token(), origin=PAGE_ORIGIN
    )
    assert (close_code, reason) == (4002, "too_many_connections")
    assert 4000 <= close_code < 4500
    assert (await handshake(browser_stack, browser_stack.token(), origin=None))[2] == 429
    await first.close()


# --- honest endings -------------------------------------------------------------------------


async def run_with(replies: list[Reply], outline: dict[str, Any]) -> list[dict[str, Any]]:
    stack = await start_stack(ScriptedLLM(lambda n, _body: replies[min(n, len(replies) - 1)]))
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "outline": outline})
        return await client.run_to_end()
    finally:
        await stack.close()


ONE_SECTION = {
    "document_id": "d",
    "title": "One section",
    "sections": [{"id": "only", "title": "Only", "target_tokens": 30}],
}


async def test_content_filter_passes_through() -> None:
    frames = await run_with([Reply(tokens=["Half", " a"], finish_reason="content_filter")], ONE_SECTION)
    end = next(f for f in frames if f["type"] == "section_end")
    assert end["finish_reason"] == "content_filter"
    assert frames[-1]["status"] == "completed"


async def test_a_stream_without_done_or_finish_reason_is_retried_not_stop() -> None:
    frames = await run_with(
        [
            Reply(tokens=["Cut", " short"], finish_reason=None, send_done=False),
            Reply(tokens=["Whole", " text."]),
        ],
        ONE_SECTION,
    )
    starts = [f["attempt"] for f in frames if f["type"] == "section_start"]
    assert starts == [1, 2]
    assert sections_text(frames) == {"only": "Whole text."}
    end = next(f for f in frames if f["type"] == "section_end")
    assert end["finish_reason"] == "stop"


async def test_done_without_finish_reason_is_a_finished_stop() -> None:
    frames = await run_with([Reply(tokens=["Fine."], finish_reason=None)], ONE_SECTION)
    assert [f["attempt"] for f in frames if f["type"] == "section_start"] == [1]
    assert next(f for f in frames if f["type"] == "section_end")["finish_reason"] == "stop"


async def test_completed_only_after_the_last_summary_or_saying_why_not() -> None:
    gate = asyncio.Event()

    def script(n: int, _body: dict[str, Any]) -> Reply:
        return Reply(tokens=["Last", " words."], token_delay_s=0.3) if n == 2 else Reply()

    stack = await start_stack(ScriptedLLM(script), generator={"summary_deadline_s": 0.5})
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "outline": OUTLINE_3})
        frames = await client.recv_until(
            lambda f: f["type"] == "section_start" and f["section_id"] == "money"
        )
        await stack.summary.stop()  # the summary service dies while the last section is written
        gate.set()
        frames += await client.run_to_end()
    finally:
        await stack.close()
    after_last = frames[[f.get("section_id") for f in frames].index("money") :]
    kinds = [(f["type"], f.get("code")) for f in after_last if f["type"] != "section_chunk"]
    assert kinds[-2:] == [("error", "summary_unavailable"), ("run_end", None)]
    assert frames[-1]["status"] == "completed"


# --- gRPC -------------------------------------------------------------------------------------


@pytest.fixture
async def grpc_stack(runlog_url: str | None) -> AsyncIterator[Stack]:
    stack = await start_stack(runlog_url=runlog_url)
    yield stack
    await stack.close()


async def test_attach_at_the_end_of_an_ended_run_answers_with_its_status(
    grpc_stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(grpc_stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        events = [
            r.event
            async for r in stub.StartRun(
                generator_pb2.StartRunRequest(outline=outline_message(), user_id="svc"),
                timeout=30,
            )
        ]
        run_id, last = events[-1].run_id, events[-1].seq
        answers = [
            r
            async for r in stub.AttachRun(
                generator_pb2.AttachRunRequest(run_id=run_id, user_id="svc", after_seq=last),
                timeout=5,
            )
        ]
        assert len(answers) == 1 and answers[0].WhichOneof("item") == "run"
        assert answers[0].run.status == events_pb2.RUN_STATUS_COMPLETED
        assert answers[0].run.last_seq == last
        # From seq 3: the `run` message first, then the events.
        replay = [
            r
            async for r in stub.AttachRun(
                generator_pb2.AttachRunRequest(run_id=run_id, user_id="svc", after_seq=3),
                timeout=5,
            )
        ]
        assert replay[0].WhichOneof("item") == "run"
        assert [r.event.seq for r in replay[1:]] == list(range(4, last + 1))
        cancelled = await stub.CancelRun(
            generator_pb2.CancelRunRequest(run_id=run_id, user_id="svc"), timeout=5
        )
        assert cancelled.already_ended
        assert cancelled.status == events_pb2.RUN_STATUS_COMPLETED


async def test_start_run_is_idempotent_by_request_id_and_list_runs_lists_the_users_runs(
    grpc_stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(grpc_stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        request = generator_pb2.StartRunRequest(
            outline=outline_message(), user_id="svc", request_id="same-1"
        )
        first = [r.event async for r in stub.StartRun(request, timeout=30)]
        llm_requests = len(grpc_stack.llm.requests)
        again = [r.event async for r in stub.StartRun(request, timeout=30)]
        assert [e.SerializeToString() for e in again] == [e.SerializeToString() for e in first]
        assert len(grpc_stack.llm.requests) == llm_requests  # nothing written twice
        other = [
            r.event
            async for r in stub.StartRun(
                generator_pb2.StartRunRequest(
                    outline=outline_message(), user_id="someone-else", request_id="same-1"
                ),
                timeout=30,
            )
        ]
        assert other[0].run_id != first[0].run_id  # request ids are per user

        listed = await stub.ListRuns(generator_pb2.ListRunsRequest(user_id="svc"), timeout=5)
        assert [r.run_id for r in listed.runs] == [first[0].run_id]
        info = listed.runs[0]
        assert info.status == events_pb2.RUN_STATUS_COMPLETED
        assert info.last_seq == first[-1].seq
        assert info.document_id == OUTLINE_3["document_id"]
        assert info.started_at_unix_ms > 0
        nobody = await stub.ListRuns(generator_pb2.ListRunsRequest(user_id="nobody"), timeout=5)
        assert list(nobody.runs) == []
        limits = await stub.GetLimits(generator_pb2.GetLimitsRequest(), timeout=5)
        assert (limits.max_runs_per_user, limits.max_outline_tokens) == (4, 32768)
