"""The `docgen` CLI, run as a real subprocess against the in-process stack (edge, generator,
summary, scripted OpenAI server), plus the Markdown assembly and the report on their own."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import pty
import re
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jwt
import pytest

from clients.cli import DEFAULT_TTL_S, build_parser, resume_command, run
from clients.console import Console
from clients.errors import EdgeUnreachable
from clients.follow import ReconnectPolicy, RunFollower
from clients.markdown import MarkdownAssembler, render_markdown, restart_notice
from clients.report import RunReport
from services.edge.app import SOCKETS
from services.edge.session import close_for_shutdown
from services.edge.settings import DEV_JWT_SECRET
from tests.support.processes import free_port
from tests.support.scripted_llm import Reply, ScriptedLLM, words
from tests.support.stack import OUTLINE_3, Stack, start_stack, wait_for
from tests.support.tcp_proxy import TcpProxy

TITLE = "Running a small bakery"
TEXTS = {
    "intro": "Baking bread for a living starts with curiosity. Flour, water and salt become a "
    "trade. Many bakers begin at home before they open a shop.",
    "ovens": "A deck oven gives bread a crisp crust. Convection ovens bake pastry evenly. "
    "The choice of oven shapes the menu of the bakery.",
    "money": "Margins on bread are thin, so volume matters. Pastries carry better margins. "
    "Careful costing of ingredients keeps the bakery alive.",
}
# Written out rather than rendered by the code under test.
EXPECTED = (
    f"# {TITLE}\n"
    f"\n## Why bake\n\n{TEXTS['intro']}\n"
    f"\n## Choosing ovens\n\n{TEXTS['ovens']}\n"
    f"\n## Making money\n\n{TEXTS['money']}\n"
)

_bin = Path(sys.executable).with_name("docgen")
DOCGEN = [str(_bin)] if _bin.exists() else [sys.executable, "-m", "clients.cli"]

Script = Callable[[int, dict[str, Any]], Reply]


def section_of(body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    for section in cast(list[dict[str, Any]], OUTLINE_3["sections"]):
        if f'"{section["title"]}"' in prompt:
            return str(section["id"])
    raise AssertionError(f"prompt names no known section: {prompt[:200]}")


def by_section(token_delay_s: float = 0.0) -> Script:
    def script(_n: int, body: dict[str, Any]) -> Reply:
        return Reply(tokens=words(TEXTS[section_of(body)]), token_delay_s=token_delay_s)

    return script


@pytest.fixture
async def stacks() -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    started: list[Stack] = []

    async def start(script: Script | None = None, **options: Any) -> Stack:
        stack = await start_stack(ScriptedLLM(script or by_section()), **options)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        await stack.close()


def url_of(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.edge_port}/v1/ws"


@pytest.fixture
def outline_file(tmp_path: Path) -> Path:
    path = tmp_path / "outline.json"
    path.write_text(json.dumps(OUTLINE_3))
    return path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCGEN_")}
    return await asyncio.create_subprocess_exec(
        *DOCGEN,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **(env or {})},
    )


async def finish(process: asyncio.subprocess.Process, within_s: float = 60.0) -> Result:
    out, err = await asyncio.wait_for(process.communicate(), within_s)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def docgen(*args: str, env: dict[str, str] | None = None) -> Result:
    return await finish(await spawn(*args, env=env))


def run_id_of(result: Result) -> str:
    match = re.search(r"^run (\S+): completed", result.stderr, re.MULTILINE)
    assert match, result.stderr
    return match.group(1)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# --- generate --------------------------------------------------------------------------------


async def test_generate_streams_the_document_as_markdown_to_stdout(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    stack = await stacks()
    result = await docgen("generate", str(outline_file), "--url", url_of(stack), "--sub", "alice")
    assert result.code == 0, result.stderr
    assert result.stdout == EXPECTED
    run_id = run_id_of(result)
    assert f"run {run_id}: completed · 3/3 sections" in result.stderr
    assert re.search(r"ttft ms\s+dur ms\s+tok/s\s+summ ms", result.stderr)
    assert last_line(result.stderr) == f"docgen: run {run_id} completed"


async def test_generate_to_a_file_keeps_stdout_clean_and_shows_progress(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path, tmp_path: Path
) -> None:
    stack = await stacks()
    output = tmp_path / "doc.md"
    result = await docgen(
        "generate", str(outline_file), "--url", url_of(stack), "--output", str(output), "--progress"
    )
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert output.read_text() == EXPECTED
    assert "[1/3] Why bake" in result.stderr and "[3/3] Making money" in result.stderr
    for version in (1, 2, 3):
        assert f"summary v{version} (extractive" in result.stderr
    assert "/60 tok" in result.stderr


async def test_quiet_leaves_stderr_empty_on_success(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    stack = await stacks()
    result = await docgen("generate", str(outline_file), "--url", url_of(stack), "--quiet")
    assert (result.code, result.stdout, result.stderr) == (0, EXPECTED, "")


def flaky_ovens() -> Script:
    """The first attempt at each 'ovens' section breaks after two tokens; the retry works."""
    ovens_requests = [0]

    def script(_n: int, body: dict[str, Any]) -> Reply:
        section = section_of(body)
        if section == "ovens":
            ovens_requests[0] += 1
            if ovens_requests[0] % 2 == 1:
                return Reply(tokens=words(TEXTS["ovens"]), drop_after=2)
        return Reply(tokens=words(TEXTS[section]))

    return script


async def test_a_retried_section_is_restarted_on_stdout_and_written_once_to_a_file(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path, tmp_path: Path
) -> None:
    stack = await stacks(flaky_ovens())
    streamed = await docgen("generate", str(outline_file), "--url", url_of(stack))
    assert streamed.code == 0, streamed.stderr
    # The failed attempt was cut after two words, inside its first sentence: the generator's
    # opening filter still held them (a first line could be a preamble), so none reached stdout.
    first_try = ""
    assert streamed.stdout == (
        f"# {TITLE}\n"
        f"\n## Why bake\n\n{TEXTS['intro']}\n"
        f"\n## Choosing ovens\n\n{first_try}{restart_notice(2)}"
        f"\n## Choosing ovens\n\n{TEXTS['ovens']}\n"
        f"\n## Making money\n\n{TEXTS['money']}\n"
    )
    assert "writing section 'Choosing ovens' again (attempt 2)" in streamed.stderr

    output = tmp_path / "doc.md"
    written = await docgen("generate", str(outline_file), "--url", url_of(stack), "-o", str(output))
    assert written.code == 0, written.stderr
    assert output.read_text() == EXPECTED
    assert re.search(r"Choosing ovens\s+2\s", written.stderr)  # the table's "try" column


async def test_a_failing_run_exits_1_with_the_servers_reason(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    stack = await stacks(lambda _n, _body: Reply(status=400))
    result = await docgen("generate", str(outline_file), "--url", url_of(stack))
    assert result.code == 1
    line = last_line(result.stderr)
    assert re.fullmatch(
        r"docgen: run \S+ failed: llm_rejected: .*HTTP 400.*; fix the cause.*", line
    )
    assert ": failed · 0/3 sections" in result.stderr


async def test_an_outline_the_edge_refuses_exits_2(
    stacks: Callable[..., Awaitable[Stack]], tmp_path: Path
) -> None:
    stack = await stacks()
    outline = {**OUTLINE_3, "sections": [OUTLINE_3["sections"][0], OUTLINE_3["sections"][0]]}
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(outline))
    result = await docgen("generate", str(path), "--url", url_of(stack))
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr == (
        'docgen: the edge refused the outline: the outline needs fixing: section 2 "Why bake": '
        "\"id\" 'intro' is used by an earlier section (invalid_outline)\n"
    )


async def test_a_missing_field_is_explained_in_words_with_the_stable_code(
    stacks: Callable[..., Awaitable[Stack]], tmp_path: Path
) -> None:
    # The minimal outline a newcomer writes first: no document_id.
    stack = await stacks()
    path = tmp_path / "minimal.json"
    sections = [{"id": "a", "title": "Alpha", "target_tokens": 0}]
    path.write_text(json.dumps({"title": "T", "sections": sections}))
    missing = await docgen("generate", str(path), "--url", url_of(stack))
    assert missing.code == 2
    assert missing.stderr == (
        'docgen: the edge refused the outline: the outline has no "document_id"; add it. '
        '"document_id": a name you choose for the document, 1–128 characters, e.g. "my-guide". '
        "(invalid_frame at $.outline)\n"
    )
    path.write_text(json.dumps({"document_id": "d", "title": "T", "sections": sections}))
    too_small = await docgen("generate", str(path), "--url", url_of(stack))
    assert too_small.code == 2
    assert too_small.stderr.startswith(
        'docgen: the edge refused the outline: section 1 "Alpha": "target_tokens" is 0, below '
        'the minimum of 1. "target_tokens": the section\'s length in tokens, a whole number '
        "from 1 to 4096"
    )
    assert too_small.stderr.endswith("(invalid_frame at $.outline.sections[0].target_tokens)\n")


# --- exit codes before any run -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "code"),
    [
        (["--token", "garbage"], "invalid_token"),
        (["--env", "DOCGEN_TOKEN=garbage"], "invalid_token"),
        (["--env", "DOCGEN_JWT_SECRET=" + "x" * 40], "invalid_token"),
    ],
    ids=["--token", "DOCGEN_TOKEN", "wrong-secret"],
)
async def test_a_refused_token_exits_3_with_the_edges_reason(
    stacks: Callable[..., Awaitable[Stack]],
    outline_file: Path,
    tmp_path: Path,
    how: list[str],
    code: str,
) -> None:
    stack = await stacks()
    env: dict[str, str] = {}
    args = list(how)
    if args[0] == "--env":
        name, _, value = args[1].partition("=")
        env[name] = value
        args = []
    output = tmp_path / "doc.md"
    output.write_text("an earlier document\n")
    result = await docgen(
        "generate", str(outline_file), "--url", url_of(stack), "-o", str(output), *args, env=env
    )
    assert result.code == 3
    assert result.stderr.count("\n") == 1  # one line
    assert result.stderr.startswith(f"docgen: the edge refused the token (HTTP 401 {code}: ")
    assert output.read_text() == "an earlier document\n"  # untouched


async def test_an_unreachable_edge_exits_4(outline_file: Path) -> None:
    port = free_port()  # nothing listens there
    result = await docgen("generate", str(outline_file), "--url", f"ws://127.0.0.1:{port}/v1/ws")
    assert result.code == 4
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"docgen: cannot connect to ws://127.0.0.1:{port}/v1/ws (")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ('{"title": "x", "sections": [', "is not valid JSON (line 1, column 29"),
        ('["not", "an", "object"]', "must be a JSON object"),
    ],
    ids=["missing", "invalid-json", "not-an-outline"],
)
async def test_outline_file_errors_exit_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "outline.json"
    if content is not None:
        path.write_text(content)
    result = await docgen("generate", str(path), "--url", "ws://127.0.0.1:9/v1/ws")
    assert result.code == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


async def test_bad_arguments_exit_2() -> None:
    result = await docgen("generate")
    assert result.code == 2
    assert "OUTLINE.json" in result.stderr


# --- resume ----------------------------------------------------------------------------------


async def test_resume_of_a_finished_run_reproduces_the_document(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path, tmp_path: Path
) -> None:
    stack = await stacks()
    generated = await docgen("generate", str(outline_file), "--url", url_of(stack), "--sub", "bob")
    assert generated.code == 0, generated.stderr
    run_id = run_id_of(generated)

    # `--` because a run id may start with '-'.
    again = await docgen(
        "resume",
        "--after",
        "0",
        "--title",
        TITLE,
        "--url",
        url_of(stack),
        "--sub",
        "bob",
        "--",
        run_id,
    )
    assert again.code == 0, again.stderr
    assert again.stdout == EXPECTED

    output = tmp_path / "again.md"
    untitled = await docgen(
        "resume", "--url", url_of(stack), "--sub", "bob", "-o", str(output), "--", run_id
    )
    assert untitled.code == 0, untitled.stderr
    # Without --title the heading is the server's `run_started.title`.
    assert output.read_text() == EXPECTED


async def test_resume_from_the_middle_appends_the_rest_to_the_file(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path, tmp_path: Path
) -> None:
    stack = await stacks()
    client = await stack.connect(stack.token("dev"))
    await client.send({"type": "generate", "outline": OUTLINE_3})
    frames = await client.run_to_end()
    run_id = frames[0]["run_id"]
    # What an earlier `--output` invocation had written when it stopped after section 1.
    after = next(f["seq"] for f in frames if f["type"] == "summary_update")
    output = tmp_path / "doc.md"
    output.write_text(f"# {TITLE}\n\n## Why bake\n\n{TEXTS['intro']}\n")
    result = await docgen(
        "resume", "--after", str(after), "--url", url_of(stack), "-o", str(output), "--", run_id
    )
    assert result.code == 0, result.stderr
    assert output.read_text() == EXPECTED


async def test_resume_whole_rewrites_the_file_from_the_title(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path, tmp_path: Path
) -> None:
    stack = await stacks()
    client = await stack.connect(stack.token("dev"))
    await client.send({"type": "generate", "outline": OUTLINE_3})
    run_id = (await client.run_to_end())[0]["run_id"]
    output = tmp_path / "doc.md"
    output.write_text("a stale, partial document\n")
    result = await docgen(
        "resume", "--after", "9", "--whole", "--title", TITLE, "--url", url_of(stack),
        "-o", str(output), "--", run_id,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert output.read_text() == EXPECTED
    assert "not verified" not in result.stderr


async def test_after_the_token_expires_mid_run_the_hint_prints_the_whole_document(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    # The token outlives the CLI's start-up even on a loaded machine (seconds), not the ~20 s
    # run; the edge has no leeway, so it closes the socket with 4500 at `exp`.
    stack = await stacks(by_section(token_delay_s=0.35), edge={"jwt_leeway_s": 0.0})
    token = stack.token("frank", exp=int(time.time()) + 10)
    cut = await docgen("generate", str(outline_file), "--url", url_of(stack), "--token", token)
    assert cut.code == 3, cut.stderr
    assert EXPECTED.startswith(cut.stdout) and len(cut.stdout) < len(EXPECTED)
    match = re.search(
        r"your token expired during the run .*continue with: (docgen resume .*)$", cut.stderr
    )
    assert match, cut.stderr
    hint = shlex.split(match.group(1))
    assert "--after" not in hint and hint[hint.index("--title") + 1] == TITLE
    # The same user with a new token: the whole document, title and headings, verified.
    again = await docgen(*hint[1:], "--sub", "frank")
    assert again.code == 0, again.stderr
    assert again.stdout == EXPECTED
    assert "not verified" not in again.stderr and "Why bake" in again.stderr  # titles, not ids


async def test_a_token_the_cli_minted_is_renewed_when_it_expires_mid_run(
    stacks: Callable[..., Awaitable[Stack]],
) -> None:
    stack = await stacks(by_section(token_delay_s=0.1), edge={"jwt_leeway_s": 0.0})
    events: list[dict[str, Any]] = []
    notices = io.StringIO()
    follower = RunFollower(
        url=url_of(stack),
        token=stack.token("gina", exp=int(time.time()) + 2),
        request_id="r1",
        on_event=events.append,
        console=Console(notices),
        interrupt=asyncio.Event(),
        policy=ReconnectPolicy(first_delay_s=0.01, max_delay_s=0.02),
        renew_token=lambda: stack.token("gina"),
    )
    end = await follower.generate(OUTLINE_3)
    assert end["status"] == "completed"
    assert [f["seq"] for f in events] == list(range(1, end["seq"] + 1))
    assert "the token expired (close code 4500" in notices.getvalue()
    assert "a new one was minted" in notices.getvalue()


async def test_resume_of_an_unknown_run_exits_2(stacks: Callable[..., Awaitable[Stack]]) -> None:
    stack = await stacks()
    result = await docgen("resume", "--url", url_of(stack), "--", "no-such-run")
    assert result.code == 2
    assert result.stderr.startswith("docgen: run no-such-run not found")


async def test_on_a_shared_terminal_the_document_is_not_interleaved_with_progress(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    stack = await stacks()
    leader, follower_fd = pty.openpty()  # one terminal for stdout and stderr, as in a shell
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCGEN_")}
    try:
        process = await asyncio.create_subprocess_exec(
            *DOCGEN, "generate", str(outline_file), "--url", url_of(stack),
            stdin=asyncio.subprocess.DEVNULL, stdout=follower_fd, stderr=follower_fd,
            env={**clean, "COLUMNS": "100"},
        )  # fmt: skip
        os.close(follower_fd)
        follower_fd = -1
        screen = await asyncio.to_thread(read_terminal, leader)
        assert await process.wait() == 0, screen
    finally:
        os.close(leader)
        if follower_fd >= 0:
            os.close(follower_fd)
    screen = screen.replace("\r\n", "\n")
    assert screen.startswith("docgen: the document is written to this terminal; add -o FILE")
    document = screen[screen.index("# Running") :]
    assert document.startswith(EXPECTED)  # one piece: no progress line inside it
    assert "summary v" not in screen and "[1/3]" not in screen


def read_terminal(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


# --- Ctrl-C and reconnects ---------------------------------------------------------------------


async def test_ctrl_c_cancels_the_run_and_exits_130(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    stack = await stacks(by_section(token_delay_s=0.2))
    process = await spawn("generate", str(outline_file), "--url", url_of(stack))
    requests = stack.llm.requests
    await wait_for(lambda: bool(requests) and requests[0].first_token_at is not None, 20)
    process.send_signal(signal.SIGINT)
    result = await finish(process, within_s=15)
    assert result.code == 130, result.stderr
    assert "docgen: cancelling run" in result.stderr
    assert re.fullmatch(
        r"docgen: interrupted: run \S+ ended cancelled after the cancel", last_line(result.stderr)
    )
    assert ": cancelled · 0/3 sections" in result.stderr
    await wait_for(lambda: stack.llm.requests[0].disconnected_at is not None)
    assert len(stack.llm.requests) == 1
    assert result.stdout.startswith(f"# {TITLE}\n\n## Why bake\n\n")


async def test_a_close_with_4000_makes_the_cli_resume_without_loss_or_duplicates(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    stack = await stacks(by_section(token_delay_s=0.02))
    process = await spawn("generate", str(outline_file), "--url", url_of(stack))
    await wait_for(lambda: len(stack.llm.requests) >= 2, 20)  # mid-run: in section 2
    sockets = stack.edge_runner.app[SOCKETS]
    for ws in list(sockets):
        await close_for_shutdown(ws)
    result = await finish(process)
    assert result.code == 0, result.stderr
    assert result.stdout == EXPECTED
    assert "the edge closed the connection (close code 4000" in result.stderr
    assert "reconnecting in" in result.stderr


async def test_a_dropped_connection_makes_the_cli_resume_without_loss_or_duplicates(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path, tmp_path: Path
) -> None:
    stack = await stacks(by_section(token_delay_s=0.02))
    proxy = TcpProxy("127.0.0.1", stack.edge_port)
    await proxy.start()
    try:
        output = tmp_path / "doc.md"
        process = await spawn(
            "generate", str(outline_file), "--url", f"ws://{proxy.addr}/v1/ws", "-o", str(output)
        )
        await wait_for(lambda: len(stack.llm.requests) >= 2, 20)
        proxy.cut()
        result = await finish(process)
    finally:
        await proxy.stop()
    assert result.code == 0, result.stderr
    assert output.read_text() == EXPECTED
    assert proxy.connections >= 2
    assert "reconnecting in" in result.stderr


async def test_the_in_process_entry_point_streams_the_same_document(
    stacks: Callable[..., Awaitable[Stack]], outline_file: Path
) -> None:
    stack = await stacks()
    stdout, stderr = io.StringIO(), io.StringIO()
    code = await run(
        ["generate", str(outline_file), "--url", url_of(stack), "--token", stack.token("dave")],
        stdout=stdout,
        stderr=stderr,
    )
    assert code == 0, stderr.getvalue()
    assert stdout.getvalue() == EXPECTED


async def test_the_follower_gives_up_after_a_bounded_number_of_reconnects(
    stacks: Callable[..., Awaitable[Stack]],
) -> None:
    stack = await stacks(by_section(token_delay_s=0.02))
    events: list[dict[str, Any]] = []
    follower = RunFollower(
        url=url_of(stack),
        token=stack.token("erin"),
        request_id="r1",
        on_event=events.append,
        console=Console(io.StringIO()),
        interrupt=asyncio.Event(),
        policy=ReconnectPolicy(attempts=2, first_delay_s=0.01, max_delay_s=0.02),
    )
    following = asyncio.create_task(follower.generate(OUTLINE_3))
    await wait_for(lambda: len(events) > 3)
    await stack.edge_runner.cleanup()  # the edge goes away for good
    with pytest.raises(EdgeUnreachable, match="gave up after 2 reconnections without progress"):
        await following
    assert follower.run_id == events[0]["run_id"]
    assert follower.last_seq == events[-1]["seq"]


def test_the_resume_hint_protects_a_run_id_that_starts_with_a_dash() -> None:
    args = build_parser().parse_args(["generate", "o.json", "-o", "my doc.md", "--sub", "al"])
    hint = resume_command("abc", 7, args)
    assert hint == "docgen resume abc --after 7 --sub al --output 'my doc.md'"
    dashed = resume_command("-bc", 7, args)
    assert dashed == "docgen resume --after 7 --sub al --output 'my doc.md' -- -bc"
    again = build_parser().parse_args(shlex.split(dashed)[1:])
    assert (again.run_id, again.after, again.output, again.sub) == ("-bc", 7, "my doc.md", "al")


# --- token -----------------------------------------------------------------------------------


async def test_token_prints_a_development_token() -> None:
    result = await docgen("token", "--sub", "carol")
    assert result.code == 0
    token = result.stdout.strip()
    claims = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience="docgen")
    assert claims["sub"] == "carol"
    assert claims["exp"] - claims["iat"] == DEFAULT_TTL_S  # the documented default
    short = await docgen("token", "--ttl", "60")
    claims = jwt.decode(
        short.stdout.strip(), DEV_JWT_SECRET, algorithms=["HS256"], audience="docgen"
    )
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize("ttl", ["-5", "0", "soon"])
async def test_a_token_lifetime_that_is_not_positive_is_refused(ttl: str) -> None:
    result = await docgen("token", f"--ttl={ttl}")
    assert result.code == 2
    assert result.stdout == ""  # no token that is born expired
    assert "argument --ttl:" in result.stderr
    expected = "not a whole number" if ttl == "soon" else "already expired"
    assert expected in result.stderr
    assert "--ttl SECONDS" in (await docgen("token", "--help")).stdout


# --- Markdown assembly and report, on their own -----------------------------------------------


def event(seq: int, kind: str, **payload: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "run_id": "r1", "seq": seq, "ts": 0, **payload}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def retried_run() -> list[dict[str, Any]]:
    """One section whose first attempt broke after 'Half', then a retry that completed."""
    section = {"section_id": "a", "index": 0}
    start = {**section, "title": "Alpha", "target_tokens": 10}
    end = {"finish_reason": "stop", "usage": {"output_tokens": 2}, "ttft_ms": 5, "duration_ms": 40}
    return [
        event(1, "run_started", document_id="d", request_id=None, sections=["a"]),
        event(2, "section_start", **start, attempt=1),
        event(3, "section_chunk", **section, delta="Half"),
        event(4, "section_start", **start, attempt=2),
        event(5, "section_chunk", **section, delta="Whole"),
        event(6, "section_chunk", **section, delta=" text."),
        event(7, "section_end", **section, chars=11, text_sha256=sha("Whole text."), **end),
        event(
            8,
            "summary_update",
            version=1,
            through_section="a",
            summary="S.",
            method="extractive",
            latency_ms=3,
        ),
        event(
            9,
            "run_end",
            status="completed",
            totals={"sections_completed": 1, "output_tokens": 2, "duration_ms": 50},
        ),
    ]


def test_streaming_assembly_restarts_a_retried_section_below_a_notice() -> None:
    sink = io.StringIO()
    assembler = MarkdownAssembler(sink, title="Doc", streaming=True)
    for frame in retried_run():
        assembler.feed(frame)
    assert sink.getvalue() == (
        f"# Doc\n\n## Alpha\n\nHalf{restart_notice(2)}\n## Alpha\n\nWhole text.\n"
    )
    assert assembler.mismatches == []
    assert assembler.committed_seq == 9


def test_buffered_assembly_writes_only_the_last_attempt() -> None:
    sink = io.StringIO()
    assembler = MarkdownAssembler(sink, title="Doc", streaming=False)
    committed = []
    for frame in retried_run():
        assembler.feed(frame)
        committed.append(assembler.committed_seq)
    assert sink.getvalue() == render_markdown("Doc", [("Alpha", "Whole text.")])
    assert sink.getvalue() == "# Doc\n\n## Alpha\n\nWhole text.\n"
    assert assembler.mismatches == []
    # Never inside the open section: resuming after it would lose the section's start.
    assert committed == [1, 1, 1, 1, 1, 1, 7, 8, 9]


def test_a_text_that_does_not_match_its_sha256_is_reported() -> None:
    frames = retried_run()
    frames[5] = {**frames[5], "delta": " txet."}
    assembler = MarkdownAssembler(io.StringIO(), title="Doc", streaming=True)
    for frame in frames:
        assembler.feed(frame)
    assert len(assembler.mismatches) == 1
    assert assembler.mismatches[0].startswith("section 'a': assembled 11 chars with sha256 ")


def test_only_what_follows_the_cursor_is_written_but_everything_is_verified() -> None:
    # The output already holds the run up to seq 5 ("Whole"): the rest is appended, and the
    # whole section is still checked against its hash because the run is read from seq 1.
    sink = io.StringIO()
    assembler = MarkdownAssembler(sink, title=None, streaming=False, already_through=5)
    for frame in retried_run():
        assembler.feed(frame)
    assert sink.getvalue() == " text.\n"
    assert assembler.mismatches == [] and assembler.titles == {"a": "Alpha"}
    corrupted = retried_run()
    corrupted[4] = {**corrupted[4], "delta": "Hole"}
    checking = MarkdownAssembler(io.StringIO(), title=None, streaming=False, already_through=5)
    for frame in corrupted:
        checking.feed(frame)
    assert len(checking.mismatches) == 1


def test_a_retry_after_the_cursor_of_a_section_begun_before_it_restarts_it_below_a_notice() -> None:
    sink = io.StringIO()
    assembler = MarkdownAssembler(sink, title=None, streaming=False, already_through=3)
    for frame in retried_run():
        assembler.feed(frame)
    assert sink.getvalue() == f"{restart_notice(2)}\n## Alpha\n\nWhole text.\n"


def test_the_report_has_one_row_per_section_and_the_run_status() -> None:
    report = RunReport()
    for frame in retried_run():
        report.feed(frame)
    lines = report.render().splitlines()
    assert lines[0].split() == [
        "#",
        "section",
        "try",
        "tokens",
        "ttft",
        "ms",
        "dur",
        "ms",
        "tok/s",
        "summ",
        "ms",
        "end",
    ]
    assert lines[1].split() == ["1", "Alpha", "2", "2", "5", "40", "50.0", "3", "stop"]
    assert lines[2] == "run r1: completed · 1/1 sections · 2 tokens · 0.1 s"
