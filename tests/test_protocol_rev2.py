"""Contract revision 2 (DESIGN.md), end to end against the real edge, generator and summary
service with the scripted LLM: refusals a browser can read, honest endings, and the gRPC
side (AttachRun's first `run` message, ListRuns, idempotent StartRun, CancelRun's status)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from docgen.v1 import events_pb2, generator_pb2, generator_pb2_grpc

from services.common.outlines import outline_from_json
from services.edge.frames import REFUSAL_CLOSE_CODES
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.stack import OUTLINE_3, Stack, outline_message, sections_text, start_stack

PAGE_ORIGIN = "http://page.example"


# --- refusals a browser can read ------------------------------------------------------------


@pytest.fixture
async def browser_stack() -> AsyncIterator[Stack]:
    stack = await start_stack(edge={"allowed_origins": (PAGE_ORIGIN,), "max_sockets_per_user": 1})
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
    [
        ("expired", "token_expired"),
        ("missing", "missing_token"),
        ("garbage", "invalid_token"),
        ("future", "token_not_yet_valid"),
    ],
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
    assert (close_code, reason, status) == (4002, "too_many_connections", None)
    assert close_code is not None and 4000 <= close_code < 4500
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
    frames = await run_with(
        [Reply(tokens=["Half", " a"], finish_reason="content_filter")], ONE_SECTION
    )
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


# --- the WebSocket side: session, acks, refresh, runs, idempotent generate ------------------


@pytest.fixture
async def ws_stack(runlog_url: str | None) -> AsyncIterator[Stack]:
    stack = await start_stack(runlog_url=runlog_url, edge={"jwt_leeway_s": 0.0})
    yield stack
    await stack.close()


async def finished_run(stack: Stack, request_id: str = "r-1") -> list[dict[str, Any]]:
    client = await stack.connect()
    await client.send({"type": "generate", "request_id": request_id, "outline": OUTLINE_3})
    frames = await client.run_to_end()
    await client.close()
    return frames


async def test_the_session_frame_comes_first_and_says_what_the_client_can_hit(
    ws_stack: Stack,
) -> None:
    import time

    exp = int(time.time()) + 600
    client = await ws_stack.connect(ws_stack.token("alice", exp=exp))
    hello = client.hello
    assert (hello["type"], hello["user"], hello["token_expires_at"]) == (
        "session",
        "alice",
        exp * 1000,
    )
    assert "seq" not in hello and hello["session_id"].startswith("ses_")
    assert hello["heartbeat_s"] == ws_stack.edge_settings.heartbeat_s
    assert hello["limits"]["max_frame_bytes"] == ws_stack.edge_settings.max_frame_bytes
    assert (hello["limits"]["max_runs_per_user"], hello["limits"]["max_outline_tokens"]) == (
        4,
        32768,
    )
    assert hello["server"]["version"]


async def test_resume_at_the_end_of_an_ended_run_gets_the_ack_alone(ws_stack: Stack) -> None:
    import time

    frames = await finished_run(ws_stack)
    run_id, last = frames[0]["run_id"], frames[-1]["seq"]
    client = await ws_stack.connect()
    started = time.monotonic()
    await client.send({"type": "resume", "request_id": "z-1", "run_id": run_id, "after_seq": last})
    ack = await client.recv(timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert ack == {
        **ack,
        "type": "ack",
        "command": "resume",
        "request_id": "z-1",
        "run_id": run_id,
        "status": "completed",
        "last_seq": last,
    }
    await client.send({"type": "ping", "request_id": "after"})
    assert (await client.recv())["type"] == "pong"  # nothing else came


async def test_resume_is_acked_before_the_replayed_events(ws_stack: Stack) -> None:
    frames = await finished_run(ws_stack)
    run_id, last = frames[0]["run_id"], frames[-1]["seq"]
    client = await ws_stack.connect()
    await client.send({"type": "resume", "run_id": run_id, "after_seq": 2})
    await client.run_to_end()
    replay = client.received  # in the order received, the ack included
    assert (replay[0]["type"], replay[0]["status"], replay[0]["last_seq"]) == (
        "ack",
        "completed",
        last,
    )
    assert "request_id" not in replay[0]  # the resume had none: absent, never null
    assert [f["seq"] for f in replay[1:]] == list(range(3, last + 1))


async def test_cancel_is_acked_with_the_status_it_found(ws_stack: Stack) -> None:
    frames = await finished_run(ws_stack)
    client = await ws_stack.connect()
    await client.send({"type": "cancel", "request_id": "c-1", "run_id": frames[0]["run_id"]})
    ack = await client.recv(timeout=1.0)
    assert (ack["type"], ack["command"], ack["status"], ack["request_id"]) == (
        "ack",
        "cancel",
        "completed",
        "c-1",
    )


async def test_cancel_of_a_running_run_is_acked_running_then_the_run_ends_cancelled() -> None:
    stack = await start_stack(
        ScriptedLLM(lambda n, _b: Reply(tokens=["slow"] * 50, token_delay_s=0.05))
    )
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "outline": OUTLINE_3})
        started = await client.recv_until(lambda f: f["type"] == "section_chunk")
        await client.send({"type": "cancel", "request_id": "c-2", "run_id": started[0]["run_id"]})
        rest = await client.run_to_end()
        # The ack waits for the generator's answer; the run's last events may overtake it.
        if not client.acks:
            await client.recv_until(lambda f: f["type"] == "ack")
        acks = client.acks
    finally:
        await stack.close()
    assert [(a["command"], a["status"], a["request_id"]) for a in acks] == [
        ("cancel", "running", "c-2")
    ]
    assert rest[-1]["status"] == "cancelled"


async def test_generate_again_after_losing_the_socket_replays_the_same_run(
    ws_stack: Stack,
) -> None:
    frame = {"type": "generate", "request_id": "g-1", "outline": OUTLINE_3}
    lost = await ws_stack.connect()
    await lost.send(frame)
    # The socket dies before run_started was read, like a laptop lid closing.
    lost.ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await lost.session.close()

    again = await ws_stack.connect()
    await again.send(frame)
    frames = await again.run_to_end()
    assert frames[0]["type"] == "run_started" and frames[0]["request_id"] == "g-1"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))  # from seq 1
    await again.send({"type": "runs", "request_id": "l-1"})
    listing = await again.recv()
    assert [r["run_id"] for r in listing["runs"]] == [frames[0]["run_id"]]  # one run only
    documents = {r.prompt_text.split("\n")[0] for r in ws_stack.llm.requests}
    assert len(ws_stack.llm.requests) == len(OUTLINE_3["sections"]), documents


async def test_runs_lists_this_users_resumable_runs(ws_stack: Stack) -> None:
    first = await finished_run(ws_stack, "a")
    second = await finished_run(ws_stack, "b")
    client = await ws_stack.connect()
    await client.send({"type": "runs", "request_id": "l-2"})
    ack = await client.recv()
    assert (ack["type"], ack["command"], ack["request_id"]) == ("ack", "runs", "l-2")
    assert [(r["run_id"], r["status"], r["last_seq"]) for r in ack["runs"]] == [
        (first[0]["run_id"], "completed", first[-1]["seq"]),
        (second[0]["run_id"], "completed", second[-1]["seq"]),
    ]
    assert all(r["document_id"] == OUTLINE_3["document_id"] for r in ack["runs"])
    other = await ws_stack.connect(ws_stack.token("bob"))
    await other.send({"type": "runs"})
    assert (await other.recv())["runs"] == []


async def test_refresh_extends_the_socket_and_refuses_another_user(ws_stack: Stack) -> None:
    import time

    now = int(time.time())
    client = await ws_stack.connect(ws_stack.token("alice", exp=now + 2))
    await client.send({"type": "refresh", "request_id": "t-1", "token": ws_stack.token("bob")})
    refused = await client.recv()
    assert (refused["type"], refused["code"], refused["request_id"]) == (
        "error",
        "token_user_mismatch",
        "t-1",
    )
    expired = ws_stack.token("alice", exp=now - 60, iat=now - 120)
    await client.send({"type": "refresh", "request_id": "t-2", "token": expired})
    assert (await client.recv())["code"] == "token_expired"
    await client.send(
        {"type": "refresh", "request_id": "t-3", "token": ws_stack.token("alice", exp=now + 3600)}
    )
    ack = await client.recv()
    assert (ack["command"], ack["token_expires_at"]) == ("refresh", (now + 3600) * 1000)
    assert ack["token_expires_at"] > client.hello["token_expires_at"]
    await asyncio.sleep(max(0.0, now + 2.5 - time.time()))  # past the first token's exp
    await client.send({"type": "ping", "request_id": "alive"})
    assert (await client.recv())["type"] == "pong"


async def test_a_refused_refresh_keeps_the_old_expiry(ws_stack: Stack) -> None:
    import time

    now = int(time.time())
    client = await ws_stack.connect(ws_stack.token("alice", exp=now + 2))
    await client.send({"type": "refresh", "token": ws_stack.token("bob", exp=now + 3600)})
    assert (await client.recv())["code"] == "token_user_mismatch"
    message = await client.ws.receive(timeout=10)
    assert (message.type, message.data, message.extra) == (
        aiohttp.WSMsgType.CLOSE,
        4500,
        "token_expired",
    )


# --- paced replay -----------------------------------------------------------------------------

LONG_DELTA = "x" * 200  # big frames: a replay that were not paced would overflow every buffer


@pytest.mark.timeout(600)
async def test_a_40k_event_replay_to_a_slow_reader_is_paced_not_cut(
    runlog_url: str | None,
) -> None:
    from tests.support.raw_ws import RawWebSocket

    sections = 20
    tokens_per_section = 2000
    outline = {
        "document_id": "long",
        "title": "A very long run",
        "sections": [
            {"id": f"s{i}", "title": f"Part {i}", "target_tokens": 4096} for i in range(sections)
        ],
    }
    stack = await start_stack(
        ScriptedLLM(lambda n, _b: Reply(tokens=[LONG_DELTA] * tokens_per_section)),
        runlog_url=runlog_url,
        generator={"max_outline_tokens": sections * 4096},
        edge={"send_queue_frames": 256},
    )
    try:
        # The run is written straight over gRPC (flow-controlled): read live through the edge
        # by a test client on a busy machine, its 40k fast events could outrun that client and
        # close it as a slow consumer, which is right for a live reader and not the subject.
        run_id, last = await _finished_over_grpc(stack, outline)
        raw = await RawWebSocket.connect(
            "127.0.0.1",
            stack.edge_port,
            protocols=f"docgen.v1, bearer.{stack.token()}",
            rcvbuf=16384,
        )
        try:
            assert raw.status == 101
            raw.send(json.dumps({"type": "resume", "run_id": run_id, "after_seq": 0}).encode())
            seqs: list[int] = []
            while True:
                frame = await asyncio.wait_for(raw.recv(), 30)
                if frame.opcode == 0x9:  # the heartbeat: answered, as any WebSocket client does
                    raw.send(frame.payload, opcode=0xA)
                    continue
                assert frame.opcode == 0x1, f"closed with {frame.close_code} after {len(seqs)}"
                decoded = json.loads(frame.payload)
                if "seq" in decoded:
                    seqs.append(decoded["seq"])
                    if decoded["type"] == "run_end":
                        break
                await asyncio.sleep(0.001)  # a slow reader: about 1 ms per frame
            assert seqs == list(range(1, last + 1))
        finally:
            raw.close()
    finally:
        await stack.close()


async def _finished_over_grpc(stack: Stack, outline: dict[str, Any]) -> tuple[str, int]:
    """Runs `outline` to its end over gRPC as the stack's token's user; its id and last seq."""
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        request = generator_pb2.StartRunRequest(
            outline=outline_from_json(outline), user_id="alice", batch=True
        )
        last: events_pb2.RunEvent | None = None
        async for response in stub.StartRun(request, timeout=540):
            events = response.batch.events if response.HasField("batch") else [response.event]
            last = events[-1]
    assert last is not None and last.HasField("run_end") and last.seq >= 40_000
    assert last.run_end.status == events_pb2.RUN_STATUS_COMPLETED
    return last.run_id, last.seq
