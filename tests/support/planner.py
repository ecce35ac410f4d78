"""A real HTTP planner (aiohttp, port 0) speaking docs/planner.openapi.yaml, whose answers a
test scripts request by request, and which records what docgen sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.http import serve_on_free_port


@dataclass
class PlanReply:
    """What the planner does for one request."""

    status: int = 200
    body: Any = None
    """JSON to send (None with 200: the outline the planner holds for the id)."""
    raw: bytes | None = None
    """Send these bytes instead of JSON (garbage bodies)."""
    delay_s: float = 0.0
    retry_after: str | None = None


@dataclass
class PlanRequest:
    document_id: str
    headers: dict[str, str]


@dataclass
class ScriptedPlanner:
    outlines: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: Callable[[int, str], PlanReply] | None = None
    """`script(request_number, document_id)`; default: the outline, or 404."""
    requests: list[PlanRequest] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/documents/{document_id}/outline", self._outline)
        self._runner, self.port = await serve_on_free_port(
            app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _outline(self, request: web.Request) -> web.StreamResponse:
        document_id = request.match_info["document_id"]
        self.requests.append(PlanRequest(document_id, dict(request.headers)))
        if self.script is not None:
            reply = self.script(len(self.requests) - 1, document_id)
        elif document_id in self.outlines:
            reply = PlanReply()
        else:
            reply = PlanReply(status=404)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
        if reply.raw is not None:
            return web.Response(
                body=reply.raw, status=reply.status, content_type="application/json"
            )
        body = reply.body
        if body is None and reply.status == 200:
            body = self.outlines[document_id]
        if body is None:
            body = {"error": {"code": str(reply.status), "message": "scripted"}}
        return web.json_response(body, status=reply.status, headers=headers)
