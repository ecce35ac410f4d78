"""Serving an aiohttp app of a test on a free loopback port."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve_on_free_port(
    app: web.Application, **runner_options: Any
) -> tuple[web.AppRunner, int]:
    """Starts `app` on 127.0.0.1 with an OS-chosen port; returns the runner (clean it up)
    and the port."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
