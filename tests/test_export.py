"""The finished document: `GET /v1/runs/{run_id}/document` on the edge, gRPC `GetDocument`,
and `docgen export`, against a real stack (edge, generator, summary, scripted LLM), on both
run-log backends."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from docgen.v1 import document_pb2, events_pb2, generator_pb2, generator_pb2_grpc

from clients import cli
from clients.markdown import render_markdown
from services.common.document import document_to_json
from tests.support.planner import ScriptedPlanner
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import OUTLINE_3, Stack, sections_text, start_stack

# Text with what a byte-for-byte comparison must survive: non-ASCII, blank lines, a trailing
# space, Markdown of its own.
TEXTS = [
    "Pan de masa madre: harina, agua y sal. ",
    "Line one.\n\nLine two — with *emphasis* and `code`.\n",
    "Ünïcödé ✓ and a final sentence without newline",
]


BIKES = json.loads(
    (Path(__file__).resolve().parents[1] / "examples/outlines/city-bike-share.json").read_text()
)


def by_request(index: int, body: dict[str, Any]) -> Reply:
    return Reply(tokens=words(TEXTS[index % len(TEXTS)]))


@pytest.fixture
async def stack(runlog_url: str | None) -> AsyncIterator[Stack]:
    stack = await start_stack(ScriptedLLM(by_request), runlog_url=runlog_url)
    yield stack
    await stack.close()


def document_url(stack: Stack, run_id: str, fmt: str | None = None) -> str:
    query = f"?format={fmt}" if fmt else ""
    return f"http://127.0.0.1:{stack.edge_port}/v1/runs/{run_id}/document{query}"


async def get(
    stack: Stack, run_id: str, *, token: str | None, fmt: str | None = None
) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(document_url(stack, run_id, fmt), headers=headers) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def completed_run(stack: Stack, sub: str = "alice") -> list[dict[str, Any]]:
    client = await stack.connect(stack.token(sub))
    await client.send({"type": "generate", "outline": OUTLINE_3, "request_id": "x1"})
    frames = await client.run_to_end()
    assert frames[-1]["status"] == "completed"
    return frames


async def test_markdown_and_json_match_the_streamed_sections_byte_for_byte(stack: Stack) -> None:
    frames = await completed_run(stack)
    run_id = frames[-1]["run_id"]
    streamed = sections_text(frames)
    titles = {f["section_id"]: f["title"] for f in frames if f["type"] == "section_start"}
    ends = {f["section_id"]: f for f in frames if f["type"] == "section_end"}
    summary = [f for f in frames if f["type"] == "summary_update"][-1]["summary"]
    order = [s["id"] for s in OUTLINE_3["sections"]]

    status, content_type, markdown = await get(stack, run_id, token=stack.token("alice"))
    assert status == 200
    assert content_type == "text/markdown; charset=utf-8"
    expected = render_markdown(OUTLINE_3["title"], [(titles[i], streamed[i]) for i in order])
    assert markdown.encode() == expected.encode()

    status, content_type, body = await get(stack, run_id, token=stack.token("alice"), fmt="json")
    assert status == 200 and content_type.startswith("application/json")
    document = json.loads(body)
    assert document["title"] == OUTLINE_3["title"]
    assert document["status"] == "completed"
    assert document["summary"] == summary
    assert [s["id"] for s in document["sections"]] == order
    for section in document["sections"]:
        assert section["text"].encode() == streamed[section["id"]].encode()
        assert section["text_sha256"] == ends[section["id"]]["text_sha256"]
        assert hashlib.sha256(section["text"].encode()).hexdigest() == section["text_sha256"]

    # gRPC GetDocument returns the same document.
    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        response = await stub.GetDocument(
            generator_pb2.GetDocumentRequest(run_id=run_id, user_id="alice"), timeout=10
        )
    assert response.document.markdown == markdown
    assert document_to_json(response.document) == document


async def test_only_its_user_gets_the_document(stack: Stack) -> None:
    frames = await completed_run(stack)
    run_id = frames[-1]["run_id"]
    for token, run in ((stack.token("mallory"), run_id), (stack.token("alice"), "run_nope")):
        status, _, body = await get(stack, run, token=token)
        assert status == 404
        assert json.loads(body)["error"]["code"] == "run_not_found"
    status, _, body = await get(stack, run_id, token=None)
    assert (status, json.loads(body)["error"]["code"]) == (401, "missing_token")
    status, _, body = await get(stack, run_id, token="not.a.jwt")
    assert (status, json.loads(body)["error"]["code"]) == (401, "invalid_token")
    status, _, body = await get(stack, run_id, token=stack.token("alice"), fmt="pdf")
    assert (status, json.loads(body)["error"]["code"]) == (400, "invalid_format")

    async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetDocument(
                generator_pb2.GetDocumentRequest(run_id=run_id, user_id="mallory"), timeout=10
            )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_run_being_written_is_409_with_its_status() -> None:
    stack = await start_stack(
        ScriptedLLM(lambda _n, _b: Reply(tokens=["slow"] * 400, token_delay_s=0.05))
    )
    try:
        client = await stack.connect()
        await client.send({"type": "generate", "outline": OUTLINE_3, "request_id": "s"})
        started = (await client.recv_until(lambda f: f["type"] == "section_chunk"))[-1]
        run_id = started["run_id"]

        status, _, body = await get(stack, run_id, token=stack.token("alice"))
        assert status == 409
        assert json.loads(body)["error"] == {
            "code": "run_not_ended",
            "message": json.loads(body)["error"]["message"],
            "status": "running",
        }
        async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetDocument(
                    generator_pb2.GetDocumentRequest(run_id=run_id, user_id="alice"), timeout=10
                )
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ("docgen-run-status", "running") in tuple(raised.value.trailing_metadata())

        # Cancelled, it has a document: the sections that ended, the cut one marked as such.
        await client.send({"type": "cancel", "run_id": run_id, "request_id": "c"})
        frames = await client.run_to_end()
        assert frames[-1]["status"] == "cancelled"
        status, _, body = await get(stack, run_id, token=stack.token("alice"), fmt="json")
        assert status == 200
        document = json.loads(body)
        assert document["status"] == "cancelled"
        assert [s["finish_reason"] for s in document["sections"]] == ["cancelled"]
        status, _, markdown = await get(stack, run_id, token=stack.token("alice"))
        assert markdown == f"# {OUTLINE_3['title']}\n"
    finally:
        await stack.close()


async def test_docgen_export_saves_what_the_edge_serves(stack: Stack, tmp_path: Path) -> None:
    frames = await completed_run(stack)
    run_id = frames[-1]["run_id"]
    _, _, markdown = await get(stack, run_id, token=stack.token("alice"))
    _, _, as_json = await get(stack, run_id, token=stack.token("alice"), fmt="json")

    async def docgen(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await cli.run(
            [*argv, "--url", stack.ws_url.replace("http", "ws")], stdout=out, stderr=err
        )
        return code, out.getvalue(), err.getvalue()

    target = tmp_path / "doc.md"
    code, _, err = await docgen("export", run_id, "--sub", "alice", "-o", str(target))
    assert code == 0, err
    assert target.read_bytes() == markdown.encode()
    code, out, _ = await docgen("export", run_id, "--sub", "alice", "--format", "json")
    assert (code, out) == (0, as_json)
    code, _, err = await docgen("export", run_id, "--sub", "mallory")
    assert code == 2 and "not found" in err


async def test_docgen_generate_by_plan_then_export(tmp_path: Path) -> None:
    outline = BIKES
    planner = ScriptedPlanner(outlines={outline["document_id"]: outline})
    await planner.start()
    stack = await start_stack(ScriptedLLM(by_request), generator={"planner_url": planner.url})
    try:
        url = stack.ws_url.replace("http", "ws")
        written, exported = tmp_path / "written.md", tmp_path / "exported.md"
        out, err = io.StringIO(), io.StringIO()
        code = await cli.run(
            ["generate", "--plan", outline["document_id"], "--url", url, "-o", str(written)],
            stdout=out,
            stderr=err,
        )
        assert code == 0, err.getvalue()
        run_id = re.findall(r"\brun (run_[\w-]+)", err.getvalue())[-1]
        code = await cli.run(
            ["export", run_id, "--url", url, "-o", str(exported)], stdout=out, stderr=err
        )
        assert code == 0, err.getvalue()
        assert exported.read_bytes() == written.read_bytes()
        assert written.read_text().startswith(f"# {outline['title']}\n")

        code = await cli.run(["generate", "--plan", "nope", "--url", url], stdout=out, stderr=err)
        assert code == 2 and "plan_not_found" in err.getvalue()
    finally:
        await stack.close()
        await planner.stop()


def test_the_document_message_says_what_each_field_is() -> None:
    # The JSON rendering carries every field of the proto message but the Markdown itself.
    fields = {f.name for f in document_pb2.Document.DESCRIPTOR.fields} - {"markdown"}
    assert fields == set(
        document_to_json(document_pb2.Document(status=events_pb2.RUN_STATUS_COMPLETED))
    )
