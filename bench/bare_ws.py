"""The handshake and memory baseline: a bare aiohttp WebSocket endpoint that does only what any
authenticated WebSocket must (read the `bearer.<JWT>` subprotocol, verify the HS256 token with
pyjwt, select `docgen.v1`, keep the socket open with heartbeats), none of docgen's work.

Run: `python -m bench.bare_ws --port 8091` (the JWT secret comes from `DOCGEN_JWT_SECRET`).
"""

from __future__ import annotations

import argparse
import os

import jwt
from aiohttp import web

SUBPROTOCOL = "docgen.v1"
SECRET = web.AppKey("secret", str)


async def websocket(request: web.Request) -> web.StreamResponse:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    bearer = next((p[len("bearer.") :] for p in offered if p.startswith("bearer.")), None)
    if SUBPROTOCOL not in offered or bearer is None:
        return web.json_response({"error": {"code": "bad_handshake"}}, status=400)
    try:
        jwt.decode(bearer, request.app[SECRET], algorithms=["HS256"], audience="docgen")
    except jwt.InvalidTokenError:
        return web.json_response({"error": {"code": "invalid_token"}}, status=401)
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=20.0)
    await ws.prepare(request)
    async for _message in ws:
        pass
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_ws", description=__doc__)
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    app = web.Application()
    app[SECRET] = os.environ["DOCGEN_JWT_SECRET"]
    app.router.add_get("/v1/ws", websocket)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=lambda *_: None)


if __name__ == "__main__":
    main()
