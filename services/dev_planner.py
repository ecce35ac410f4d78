"""A planner for development (`make run`): serves the example outlines by `document_id`
through the contract docgen reads plans with (docs/planner.md), so a newcomer can generate by
reference out of the box. Not T-05: any bearer token is accepted, nothing is verified."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from services.common.env import env_str
from services.common.logs import configure_logging

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTLINES = web.AppKey("outlines", dict[str, dict[str, Any]])


@dataclass(frozen=True)
class DevPlannerSettings:
    addr: str = "127.0.0.1:8090"
    """Where `make run`'s development planner listens (`DOCGEN_DEV_PLANNER_ADDR`); the
    generator is pointed at it through `DOCGEN_PLANNER_URL`."""
    outlines_dir: str = "examples/outlines"
    """The folder of outline JSON files it serves by their `document_id`, relative to the
    repository unless absolute (`DOCGEN_DEV_PLANNER_DIR`)."""

    @classmethod
    def from_env(cls) -> DevPlannerSettings:
        return cls(
            addr=env_str("DOCGEN_DEV_PLANNER_ADDR", cls.addr),
            outlines_dir=env_str("DOCGEN_DEV_PLANNER_DIR", cls.outlines_dir),
        )


def load_outlines(folder: Path) -> dict[str, dict[str, Any]]:
    """Every `*.json` outline in the folder, by its `document_id`."""
    outlines: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        outline = json.loads(path.read_text(encoding="utf-8"))
        outlines[outline["document_id"]] = outline
    return outlines


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def outline(request: web.Request) -> web.Response:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return error(401, "missing_token", "send the user's token as 'Authorization: Bearer'")
    outlines: dict[str, dict[str, Any]] = request.app[OUTLINES]
    found = outlines.get(request.match_info["document_id"])
    if found is None:
        known = ", ".join(sorted(outlines))
        return error(404, "not_found", f"no such document; this planner has: {known}")
    return web.json_response(found)


async def healthz(request: web.Request) -> web.Response:
    outlines: dict[str, dict[str, Any]] = request.app[OUTLINES]
    return web.json_response({"status": "ok", "documents": sorted(outlines)})


def create_app(outlines: dict[str, dict[str, Any]]) -> web.Application:
    app = web.Application()
    app[OUTLINES] = outlines
    app.router.add_get("/v1/documents/{document_id}/outline", outline)
    app.router.add_get("/healthz", healthz)
    return app


async def serve() -> None:
    configure_logging("dev-planner")
    settings = DevPlannerSettings.from_env()
    host, _, port = settings.addr.rpartition(":")
    outlines = load_outlines(REPO_ROOT / settings.outlines_dir)
    runner = web.AppRunner(create_app(outlines), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    log.info("development planner on %s serving: %s", settings.addr, ", ".join(sorted(outlines)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
