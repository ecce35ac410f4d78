"""`docgen`: the command-line client of the edge's WebSocket (docs: `docgen --help`).

Exit codes: 0 completed, 1 run failed or cancelled by the server, 2 usage or outline errors,
3 authentication refused, 4 edge unreachable, 130 interrupted (see clients/errors.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TextIO

from clients.connection import check_url
from clients.console import Console
from clients.errors import (
    AuthRefused,
    CliError,
    EdgeUnreachable,
    Interrupted,
    RunFailed,
    UsageError,
)
from clients.export import export
from clients.follow import RunFollower
from clients.markdown import MarkdownAssembler
from clients.report import RunReport
from services.common.defaults import ws_url

DEFAULT_URL = ws_url()
DEFAULT_SUB = "dev"
DEFAULT_TTL_S = 3600  # development tokens live an hour (docs/security.md)
CANCEL_WAIT_S = 5.0
EPILOG = """\
token: --token; else a development token for --sub, signed with $DOCGEN_JWT_SECRET (or the
public dev secret); else $DOCGEN_TOKEN; else a development token for 'dev'. exit codes: 0
completed, 1 run failed or cancelled by the server, 2 usage or outline error, 3 token
refused, 4 edge unreachable, 130 interrupted (Ctrl-C cancels the run; a second Ctrl-C quits
at once)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docgen", description="Write a document section by section and stream it live."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--url",
        default=os.environ.get("DOCGEN_URL") or DEFAULT_URL,
        help=f"the edge's WebSocket ($DOCGEN_URL, default {DEFAULT_URL})",
    )
    who = connection.add_mutually_exclusive_group()
    who.add_argument("--token", help="a JWT for the edge (default: $DOCGEN_TOKEN)")
    who.add_argument("--sub", help=f"mint a dev token for this user (default {DEFAULT_SUB!r})")
    connection.add_argument(
        "--output", "-o", metavar="FILE", help="write the Markdown here, not to stdout"
    )
    connection.add_argument("--request-id", help="correlation id sent with the request")
    connection.add_argument("--quiet", "-q", action="store_true", help="only errors on stderr")
    connection.add_argument(
        "--progress", action="store_true", help="show progress even when stderr is not a terminal"
    )

    generate = commands.add_parser(
        "generate", parents=[connection], help="start a run from an outline", epilog=EPILOG
    )
    generate.add_argument(
        "outline", metavar="OUTLINE.json", nargs="?", help="the outline ('-' reads stdin)"
    )
    generate.add_argument(
        "--plan",
        metavar="DOCUMENT_ID",
        help="instead of OUTLINE.json: a planned document's id; the server reads its outline "
        "from the planner (docs/planner.md)",
    )

    export = commands.add_parser(
        "export",
        parents=[connection],
        help="save the finished document of a run (Markdown, or --format json)",
        epilog=EPILOG,
    )
    export.add_argument(
        "run_id", metavar="RUN_ID", help="as printed by generate (put -- before an id like -x)"
    )
    export.add_argument(
        "--format",
        choices=("markdown", "json"),
        default="markdown",
        help="markdown (default): the document; json: each section's text with its sha256, "
        "and the summary",
    )

    resume = commands.add_parser(
        "resume", parents=[connection], help="follow a run again, from after a seq", epilog=EPILOG
    )
    resume.add_argument(
        "run_id", metavar="RUN_ID", help="as printed by generate (put -- before an id like -x)"
    )
    resume.add_argument(
        "--after",
        type=_cursor,
        default=0,
        metavar="SEQ",
        help="the output already holds the run up to this seq: append only the rest (default 0: "
        "the whole document). The run is re-read from its start either way, so every section "
        "keeps its heading and is checked against its sha256",
    )
    resume.add_argument(
        "--whole",
        action="store_true",
        help="write the whole document, from the title on, even with --after (overwrites -o)",
    )
    resume.add_argument(
        "--title",
        help="the document title for '# ...' (default: the one the server sends in run_started)",
    )

    token = commands.add_parser("token", help="print a development token")
    token.add_argument(
        "--sub", default=DEFAULT_SUB, help=f"the user (JWT sub, default {DEFAULT_SUB!r})"
    )
    token.add_argument(
        "--ttl",
        type=_lifetime,
        default=DEFAULT_TTL_S,
        metavar="SECONDS",
        help=f"lifetime in seconds, a whole number above 0 (default {DEFAULT_TTL_S}: one hour)",
    )
    return parser


def _lifetime(text: str) -> int:
    """A token lifetime: a token that is born expired is never what anyone wants."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"{seconds} would print a token that has already expired; give a number of seconds "
            f"above 0 (default {DEFAULT_TTL_S})"
        )
    return seconds


def _cursor(text: str) -> int:
    try:
        seq = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq (a whole number)") from None
    if seq < 0:
        raise argparse.ArgumentTypeError(f"{seq} is not a seq: seqs start at 1 (0 means none)")
    return seq


def dev_token(sub: str, *, ttl_s: int = DEFAULT_TTL_S) -> str:
    from services.edge.auth import dev_token as signed_dev_token

    return signed_dev_token(sub, ttl_s=ttl_s)


def resolve_token(args: argparse.Namespace) -> str:
    if args.token is not None:
        return str(args.token)
    if args.sub is None and os.environ.get("DOCGEN_TOKEN"):
        return os.environ["DOCGEN_TOKEN"]
    return dev_token(args.sub or DEFAULT_SUB)


def token_minter(args: argparse.Namespace) -> Callable[[], str] | None:
    """How to get a fresh token when the one in use expires mid-run: only a token this CLI
    minted itself can be renewed; one given by --token or $DOCGEN_TOKEN cannot."""
    if args.token is not None or (args.sub is None and os.environ.get("DOCGEN_TOKEN")):
        return None
    return lambda: dev_token(args.sub or DEFAULT_SUB)


def same_terminal(first: TextIO, second: TextIO) -> bool:
    """True when both streams write to the same terminal (a document on stdout and progress
    on stderr would then interleave line by line)."""
    try:
        if not (first.isatty() and second.isatty()):
            return False
        return os.path.samestat(os.fstat(first.fileno()), os.fstat(second.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


def load_outline(path: str, stdin: TextIO) -> dict[str, Any]:
    try:
        raw = stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"outline file {path!r} not found; pass the path of an outline JSON file"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read outline file {path!r}: {error}") from None
    try:
        outline = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"outline file {path!r} is not valid JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg})"
        ) from None
    if not (
        isinstance(outline, dict)
        and isinstance(outline.get("title"), str)
        and isinstance(outline.get("sections"), list)
    ):
        raise UsageError(
            f"outline file {path!r} must be a JSON object with 'document_id', 'title' and "
            "'sections' (schemas/client/generate.json)"
        )
    return outline


class OutputFile:
    """Opened at the first write, so a refused token leaves an existing file untouched."""

    def __init__(self, path: Path, *, append: bool) -> None:
        if path.is_dir() or not path.parent.is_dir():
            raise UsageError(f"--output {str(path)!r} is not a file in an existing directory")
        self._path = path
        self._mode = "a" if append else "w"
        self._file: IO[str] | None = None

    def write(self, text: str, /) -> None:
        try:
            if self._file is None:
                self._file = self._path.open(self._mode, encoding="utf-8")
            self._file.write(text)
        except OSError as error:
            raise UsageError(f"cannot write --output {str(self._path)!r}: {error}") from None

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def resume_command(
    run_id: str, after: int, args: argparse.Namespace, *, title: str | None = None
) -> str:
    """The command that continues this run where the output stops (never echoes a token).
    Output to stdout is not continued but written again whole, so no `--after` there."""
    options = [f"--after {after}"] if args.output and after > 0 else []
    if title:
        options.append(f"--title {shlex.quote(title)}")
    if args.url != DEFAULT_URL:
        options.append(f"--url {shlex.quote(args.url)}")
    if args.sub:
        options.append(f"--sub {shlex.quote(args.sub)}")
    if args.output:
        options.append(f"--output {shlex.quote(args.output)}")
    # A run id may start with '-' (URL-safe base64), which argparse would take for an option.
    if run_id.startswith("-"):
        return " ".join(["docgen resume", *options, "--", run_id])
    return " ".join(["docgen resume", run_id, *options])


async def follow_run(
    args: argparse.Namespace,
    *,
    stdout: TextIO,
    stderr: TextIO,
    stdin: TextIO,
    interrupt: asyncio.Event,
) -> int:
    """`generate` and `resume`: follows the run to its end and returns the exit code."""
    check_url(args.url)
    if args.command == "generate" and (args.outline is None) == (args.plan is None):
        raise UsageError("give either OUTLINE.json or --plan DOCUMENT_ID")
    outline = (
        load_outline(args.outline, stdin) if args.command == "generate" and args.outline else None
    )
    token = resolve_token(args)
    # With --plan the title comes from the server (`run_started.title`).
    title = outline["title"] if outline is not None else getattr(args, "title", None)
    after = 0 if args.command != "resume" or args.whole else args.after
    sink: OutputFile | TextIO = stdout
    if args.output:
        sink = OutputFile(Path(args.output), append=after > 0)
    assembler = MarkdownAssembler(
        sink, title=title, streaming=not args.output, already_through=after
    )
    report = RunReport()
    # The document and the progress lines on one terminal would interleave line by line, so
    # there the progress stays off (unless --progress) and the CLI suggests -o instead.
    shared_terminal = not args.output and same_terminal(stdout, stderr)
    console = Console(
        stderr,
        quiet=args.quiet,
        progress=args.progress or (stderr.isatty() and not shared_terminal),
        live_bar=bool(args.output) or not stdout.isatty(),
    )
    if shared_terminal and not args.progress:
        console.info(
            "docgen: the document is written to this terminal; add -o FILE to save it and watch "
            "the progress here instead"
        )

    def on_event(frame: dict[str, Any]) -> None:
        assembler.feed(frame)
        report.feed(frame)
        console.feed(frame)
        if frame["seq"] <= after:
            return  # already reported by the command that wrote the output so far
        if frame["type"] == "section_start" and frame["attempt"] > 1:
            console.info(
                f"docgen: the server is writing section {frame['title']!r} again "
                f"(attempt {frame['attempt']}); the text of the failed attempt is dropped"
            )
        elif frame["type"] == "error":
            section = frame.get("section_id")
            where = f" in section {assembler.titles.get(section, section)!r}" if section else ""
            console.info(f"docgen: the server reported {frame['code']}{where}: {frame['message']}")

    follower = RunFollower(
        url=args.url,
        token=token,
        request_id=args.request_id or f"cli-{uuid.uuid4().hex[:12]}",
        on_event=on_event,
        console=console,
        interrupt=interrupt,
        cancel_wait_s=CANCEL_WAIT_S,
        renew_token=token_minter(args),
    )
    try:
        if outline is not None:
            end = await follower.generate(outline)
        elif args.command == "generate":
            end = await follower.generate_plan(args.plan)
        else:
            # Always from the start: the headings and the hashes need every event.
            end = await follower.resume(args.run_id, 0)
    except (EdgeUnreachable, AuthRefused) as error:
        if follower.run_id is not None and follower.last_seq > 0:
            hint = resume_command(follower.run_id, assembler.committed_seq, args, title=title)
            error.message += f"; the run goes on without you; continue with: {hint}"
        raise
    finally:
        if isinstance(sink, OutputFile):
            sink.close()
        console.close()
    return _outcome(end, follower, assembler, report, console, args, title)


def _outcome(
    end: dict[str, Any],
    follower: RunFollower,
    assembler: MarkdownAssembler,
    report: RunReport,
    console: Console,
    args: argparse.Namespace,
    title: str | None,
) -> int:
    run_id, status = end["run_id"], end["status"]
    console.info(report.render())
    if follower.cancel_requested:
        raise Interrupted(f"interrupted: run {run_id} ended {status} after the cancel")
    problems = assembler.mismatches + follower.gaps
    for problem in problems:
        console.error(f"docgen: {problem}")
    if problems:
        raise RunFailed(
            f"the text received does not match what the server wrote (see above); fetch it again "
            f"with: {resume_command(run_id, 0, args, title=title)}"
        )
    if status == "failed":
        error = report.last_error
        cause = f": {error['code']}: {error['message']}" if error else ""
        advice = "try again later" if error and error.get("retryable") else "fix the cause"
        raise RunFailed(f"run {run_id} failed{cause}; {advice} and generate again")
    if status == "cancelled":
        raise RunFailed(
            f"run {run_id} was cancelled by the server (cancelled elsewhere, or unfollowed past "
            "its grace period); generate it again"
        )
    where = f", written to {args.output}" if args.output else ""
    console.info(f"docgen: run {run_id} completed{where}")
    return 0


async def run(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
    interrupt: asyncio.Event | None = None,
) -> int:
    """The whole command in the running event loop; returns the exit code."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, message already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        if args.command == "token":
            stdout.write(dev_token(args.sub, ttl_s=args.ttl) + "\n")
            return 0
        if args.command == "export":
            return await export(
                args.url,
                args.run_id,
                token=resolve_token(args),
                fmt=args.format,
                output=args.output,
                stdout=stdout,
                stderr=stderr,
                quiet=args.quiet,
            )
        return await follow_run(
            args,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin or sys.stdin,
            interrupt=interrupt or asyncio.Event(),
        )
    except CliError as error:
        stderr.write(f"docgen: {error.message}\n")
        stderr.flush()
        return error.exit_code
    except BrokenPipeError:
        # Whoever read stdout went away (`docgen generate x | head`); the server cancels the
        # run once its grace period for unfollowed runs ends.
        if stdout is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        stderr.write("docgen: stdout was closed; stopped following the run\n")
        return 1


async def _run_with_ctrl_c(argv: Sequence[str] | None) -> int:
    interrupt = asyncio.Event()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        if interrupt.is_set() and task is not None:
            task.cancel()  # second Ctrl-C: stop waiting for the run to end
        interrupt.set()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await run(argv, interrupt=interrupt)
    except asyncio.CancelledError:
        sys.stderr.write("\ndocgen: interrupted twice: quit without waiting for the run to end\n")
        return Interrupted.exit_code
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(asyncio.run(_run_with_ctrl_c(argv)))


if __name__ == "__main__":
    main()
