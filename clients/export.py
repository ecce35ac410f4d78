"""`docgen export RUN_ID`: the finished document of a run, from the edge's
`GET /v1/runs/{run_id}/document` (Markdown, or JSON whose sections are checked against their
`text_sha256`), to stdout or a file. One HTTP request: no WebSocket."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp
from yarl import URL

from clients.connection import CONNECT_TIMEOUT_S, check_url
from clients.errors import AuthRefused, EdgeUnreachable, RunFailed, UsageError

REQUEST_TIMEOUT_S = 60.0


def document_url(ws_url: str, run_id: str, fmt: str) -> URL:
    """The document's HTTP address on the edge that `ws_url` (the socket) names."""
    socket = check_url(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(socket.scheme, socket.scheme)
    # Same host and port as the socket; the run id is one path segment whatever it holds.
    base = socket.with_scheme(scheme).with_path("/").with_query(None)
    url = base.join(URL(f"v1/runs/{quote(run_id, safe='')}/document", encoded=True))
    return url.with_query({"format": fmt}) if fmt != "markdown" else url


def _error_of(body: str) -> tuple[str, str, dict[str, Any]]:
    try:
        error = json.loads(body)["error"]
        return str(error["code"]), str(error["message"]), error
    except (ValueError, KeyError, TypeError):
        return "", body[:200], {}


async def fetch_document(ws_url: str, run_id: str, *, token: str, fmt: str) -> str:
    """The document's text as the edge serves it; raises the CLI's errors."""
    url = document_url(ws_url, run_id, fmt)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            body = await response.text(encoding="utf-8")
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise EdgeUnreachable(f"cannot reach {url.origin()} ({type(error).__name__})") from None
    if status == 200:
        return body
    code, message, details = _error_of(body)
    if status in (401, 403):
        raise AuthRefused(f"the edge refused the token (HTTP {status} {code}: {message})")
    if status == 404:
        raise UsageError(
            f"run {run_id} not found: unknown, expired (runs are kept for a while after they "
            "end), or started by another user; check RUN_ID and --sub/--token"
        )
    if status == 409:
        raise RunFailed(
            f"run {run_id} is still {details.get('status', 'running')}: its document is not "
            f"finished; follow it with `docgen resume {run_id}`, or export it once it has ended"
        )
    raise EdgeUnreachable(f"the edge answered HTTP {status} {code}: {message}")


def check_json(body: str) -> list[str]:
    """One message per section of a JSON document whose text does not match its hash."""
    problems = []
    for section in json.loads(body)["sections"]:
        digest = hashlib.sha256(section["text"].encode()).hexdigest()
        if digest != section["text_sha256"]:
            problems.append(f"section {section['id']!r}: its text does not match its text_sha256")
    return problems


async def export(
    ws_url: str,
    run_id: str,
    *,
    token: str,
    fmt: str,
    output: str | None,
    stdout: TextIO,
    stderr: TextIO,
    quiet: bool,
) -> int:
    """Downloads the document and writes it; returns the exit code (0) or raises."""
    target = Path(output) if output else None
    if target is not None and (target.is_dir() or not target.parent.is_dir()):
        raise UsageError(f"--output {output!r} is not a file in an existing directory")
    body = await fetch_document(ws_url, run_id, token=token, fmt=fmt)
    if fmt == "json":
        problems = check_json(body)
        if problems:
            raise RunFailed("; ".join(problems) + f"; export run {run_id} again")
    if target is None:
        stdout.write(body)
        stdout.flush()
    else:
        try:
            target.write_text(body, encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write --output {output!r}: {error}") from None
        if not quiet:
            stderr.write(f"docgen: run {run_id} exported to {output}\n")
    return 0
