"""A real HTTP server that speaks OpenAI's chat-completions streaming format (SSE), so the
real `openai` client is exercised. It streams scripted text token by token, can inject
faults, and records every request and when each client went away."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.http import serve_on_free_port


@dataclass
class Reply:
    """What the server does for one request."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", " world", "."])
    token_delay_s: float = 0.0
    status: int = 200
    """Non-200: answer with this status and an OpenAI-style error body, stream nothing."""
    retry_after_s: float | None = None
    drop_after: int | None = None
    """Cut the connection after this many tokens (no [DONE])."""
    stall_after: int | None = None
    """Stop sending (but keep the connection open) after this many tokens."""
    finish_reason: str | None = "stop"
    """None: no chunk with a finish reason."""
    send_done: bool = True
    """False: the stream ends (cleanly, HTTP-wise) without `data: [DONE]`."""
    report_usage: bool = True
    stamp: bool = False
    """Append the send time (time.time()) to each token as `|<ts>` for relay benchmarks."""


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float
    first_token_at: float | None = None
    disconnected_at: float | None = None
    completed: bool = False

    @property
    def prompt_text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))


def words(text: str) -> list[str]:
    """Splits text into word-ish tokens whose concatenation is the text."""
    tokens: list[str] = []
    for index, word in enumerate(text.split(" ")):
        tokens.append(word if index == 0 else " " + word)
    return [t for t in tokens if t]


class ScriptedLLM:
    """`script(request_number, body) -> Reply` decides each answer (default: a fixed reply)."""

    def __init__(self, script: Callable[[int, dict[str, Any]], Reply] | None = None) -> None:
        self.script = script or (lambda _n, _body: Reply())
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client that goes away cancels the handler at once, so the
        # moment of disconnect is recorded even between tokens.
        self._runner, self.port = await serve_on_free_port(
            app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "scripted", "object": "model"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = RecordedRequest(
            body=body, headers=dict(request.headers), received_at=time.monotonic()
        )
        self.requests.append(record)
        reply = self.script(len(self.requests) - 1, body)
        if reply.status != 200:
            headers = {}
            if reply.retry_after_s is not None:
                headers["Retry-After"] = str(reply.retry_after_s)
            return web.json_response(
                {
                    "error": {
                        "message": f"scripted status {reply.status}",
                        "type": "scripted",
                        "code": None,
                    }
                },
                status=reply.status,
                headers=headers,
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        created = int(time.time())
        try:
            for index, token in enumerate(reply.tokens):
                if reply.drop_after is not None and index >= reply.drop_after:
                    # Abort the TCP connection mid-stream, as a crashing server would.
                    assert request.transport is not None
                    request.transport.abort()
                    record.disconnected_at = time.monotonic()
                    return response
                if reply.stall_after is not None and index >= reply.stall_after:
                    await asyncio.sleep(3600)
                if reply.token_delay_s:
                    await asyncio.sleep(reply.token_delay_s)
                content = f"{token}|{time.time():.6f}" if reply.stamp else token
                await self._event(response, created, {"content": content}, None)
                if record.first_token_at is None:
                    record.first_token_at = time.monotonic()
            if reply.finish_reason is not None:
                await self._event(response, created, {}, reply.finish_reason)
            if reply.report_usage and (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "prompt_tokens": 1,
                    "completion_tokens": len(reply.tokens),
                    "total_tokens": 1 + len(reply.tokens),
                }
                chunk = {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body.get("model", "scripted"),
                    "choices": [],
                    "usage": usage,
                }
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if reply.send_done:
                await response.write(b"data: [DONE]\n\n")
            record.completed = True
        except (ConnectionResetError, asyncio.CancelledError):
            record.disconnected_at = time.monotonic()
            raise
        return response

    @staticmethod
    async def _event(
        response: web.StreamResponse, created: int, delta: dict[str, Any], finish: str | None
    ) -> None:
        chunk = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": created,
            "model": "scripted",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
