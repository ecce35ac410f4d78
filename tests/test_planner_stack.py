"""`make run`'s stack (`python -m tools.stack`, on the scripted LLM) starts the development
planner, and the command its banner prints writes a document by id, which `docgen export`
then saves byte for byte."""

from __future__ import annotations

import io
import re
from pathlib import Path

from clients import cli
from tests.support.scripted_llm import ScriptedLLM
from tests.test_stack import StackProcess, stack_env, stacks, start  # noqa: F401 (fixture)

BY_ID = re.compile(r"by id\s+\S*docgen generate --plan (\S+)")


async def test_the_banner_command_generates_by_id_and_export_saves_it(
    stacks: list[StackProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    llm = ScriptedLLM()
    await llm.start()
    try:
        stack = await start(stacks, stack_env(DOCGEN_LLM_BASE_URL=llm.base_url))
        port, token = await stack.wait_ready(within_s=90)
        assert any("services.dev_planner" in " ".join(p.cmdline()) for p in stack.children)
        match = BY_ID.search(stack.output)
        assert match, stack.output
        document_id = match.group(1)
        assert document_id == "bike-share-proposal-2025"  # examples/outlines, first by name

        url = f"ws://127.0.0.1:{port}/v1/ws"
        written, exported = tmp_path / "written.md", tmp_path / "exported.md"
        err = io.StringIO()
        code = await cli.run(
            ["generate", "--plan", document_id, "--url", url, "--token", token, "-o", str(written)],
            stdout=io.StringIO(),
            stderr=err,
        )
        assert code == 0, err.getvalue()
        run_id = re.findall(r"\brun (run_[\w-]+)", err.getvalue())[-1]
        code = await cli.run(
            ["export", run_id, "--url", url, "--token", token, "-o", str(exported)],
            stdout=io.StringIO(),
            stderr=err,
        )
        assert code == 0, err.getvalue()
        assert exported.read_bytes() == written.read_bytes()
        assert written.read_text().startswith("# ")
        # The generator wrote the planner's sections: one LLM request per section at least.
        assert len(llm.requests) >= 5
    finally:
        await llm.stop()
