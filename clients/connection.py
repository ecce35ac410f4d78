"""Opening a docgen WebSocket: the handshake with the JWT in the `bearer.<JWT>` subprotocol,
and the one translation of handshake failures into the CLI's errors."""

from __future__ import annotations

import contextlib
import json

import aiohttp
from yarl import URL

from clients.errors import AuthRefused, EdgeUnreachable, UsageError
from services.common.defaults import SUBPROTOCOL

BEARER_PREFIX = "bearer."
CONNECT_TIMEOUT_S = 10.0
# Our side of the keep-alive: a link that died silently is noticed within ~1.5x this.
HEARTBEAT_S = 15.0


def http_session() -> aiohttp.ClientSession:
    # No total timeout: a WebSocket lives as long as the run.
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
    return aiohttp.ClientSession(timeout=timeout)


def check_url(url: str) -> URL:
    try:
        parsed = URL(url)
    except ValueError as error:
        raise UsageError(f"--url {url!r} is not a URL ({error})") from None
    if parsed.scheme not in ("ws", "wss", "http", "https") or not parsed.host:
        raise UsageError(f"--url {url!r} must look like ws://HOST:PORT/v1/ws")
    return parsed


async def open_socket(
    session: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    protocols = (SUBPROTOCOL, BEARER_PREFIX + token)
    try:
        ws = await session.ws_connect(url, protocols=protocols, heartbeat=HEARTBEAT_S)
    except aiohttp.WSServerHandshakeError as error:
        raise await _refusal(session, url, protocols, error.status) from None
    except aiohttp.InvalidURL as error:
        raise UsageError(f"--url {url!r} is not a valid URL ({error})") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise EdgeUnreachable(f"cannot connect to {url} ({_describe(error)})") from None
    if ws.protocol != SUBPROTOCOL:
        await ws.close()
        raise EdgeUnreachable(
            f"{url} accepted the WebSocket but not the {SUBPROTOCOL!r} subprotocol; "
            "is --url a docgen edge?",
            transient=False,
        )
    return ws


async def _refusal(
    session: aiohttp.ClientSession, url: str, protocols: tuple[str, ...], status: int
) -> Exception:
    """The error for a handshake answered with plain HTTP. aiohttp drops the body of such an
    answer, so the same headers are sent once more without `Upgrade` to read the edge's
    `{"error": {"code", "message"}}`: the edge decides before upgrading, so it answers alike."""
    code, message = "", ""
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
        parsed = URL(url)
        scheme = {"ws": "http", "wss": "https"}.get(parsed.scheme, parsed.scheme)
        probe_url = parsed.with_scheme(scheme)
        async with session.get(
            probe_url,
            headers={"Sec-WebSocket-Protocol": ", ".join(protocols)},
            timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S),
        ) as response:
            body = json.loads(await response.text())
            code = str(body["error"]["code"])
            message = str(body["error"]["message"])
    reason = f"HTTP {status} {code}: {message}" if code else f"HTTP {status}"
    if status in (401, 403):
        return AuthRefused(f"the edge refused the token ({reason})")
    if status == 503:
        return EdgeUnreachable(f"the edge is not accepting connections ({reason})")
    if status == 404:
        return EdgeUnreachable(
            f"no docgen WebSocket at {url} ({reason}); check --url", transient=False
        )
    return EdgeUnreachable(f"the edge refused the WebSocket handshake ({reason})", transient=False)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    return str(error) or type(error).__name__
