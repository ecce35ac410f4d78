"""The Python example of docs/grpc.md runs as printed, against a real generator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from docgen.v1 import generator_pb2, generator_pb2_grpc, outline_pb2

from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import start_stack

DOC = Path(__file__).resolve().parents[1] / "docs" / "grpc.md"
TEXT = "The quarter went well. Risks remain in supply."


def example() -> dict[str, Any]:
    """The doc's first Python block, executed as a module that is not `__main__`."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "docs/grpc.md has no Python example"
    namespace: dict[str, Any] = {"__name__": "grpc_doc_example"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    return namespace


def outline() -> outline_pb2.Outline:
    return outline_pb2.Outline(
        document_id="q3",
        title="Quarterly report",
        sections=[
            outline_pb2.OutlineSection(id="summary", title="Summary", target_tokens=50),
            outline_pb2.OutlineSection(id="risks", title="Risks", target_tokens=50),
        ],
    )


async def test_write_document_and_cancel_work_as_documented() -> None:
    module = example()
    stack = await start_stack(
        ScriptedLLM(lambda n, b: Reply(tokens=words(TEXT), token_delay_s=0.02))
    )
    try:
        async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            texts = await module["write_document"](stub, outline(), "svc-reports")
            assert texts == {"summary": TEXT, "risks": TEXT}

            call = stub.StartRun(
                generator_pb2.StartRunRequest(outline=outline(), user_id="svc-reports"), timeout=30
            )
            run_id = (await call.read()).event.run_id
            call.cancel()  # detaching is not cancelling: the run is still there
            assert await module["cancel"](stub, run_id, "svc-reports") is False
            assert await module["cancel"](stub, run_id, "svc-reports") is True
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await module["cancel"](stub, run_id, "someone-else")
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await stack.close()


async def test_write_document_attaches_again_after_the_stream_breaks() -> None:
    module = example()
    stack = await start_stack(
        ScriptedLLM(lambda n, b: Reply(tokens=words(TEXT), token_delay_s=0.02))
    )
    try:
        async with grpc.aio.insecure_channel(stack.generator_addr) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            real_start = stub.StartRun

            class Broken(grpc.aio.AioRpcError):
                def __init__(self) -> None:
                    super().__init__(
                        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
                    )

            def start_then_break(request: Any, **kwargs: Any) -> Any:
                call = real_start(request, **kwargs)

                async def three_then_break() -> Any:
                    for _ in range(3):
                        yield await call.read()
                    call.cancel()
                    raise Broken()

                return three_then_break()

            stub.StartRun = start_then_break  # type: ignore[method-assign]
            texts = await module["write_document"](stub, outline(), "svc-reports")
            assert texts == {"summary": TEXT, "risks": TEXT}
    finally:
        await stack.close()
