"""Revision 2's refusals a browser can read, in real headless Chromium: page code sees the
close code and the reason of a refused handshake (not a bare 1006), and the page stops
instead of retrying with a bad token."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest

from tests.support.stack import Stack
from tests.test_browser import SectionScript, browser_stack, drive, page_driver, page_url

__all__ = ["page_driver"]  # the fixture, shared with tests/test_browser.py


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    stack = await browser_stack(SectionScript())
    yield stack
    await stack.close()


def open_socket_in_page(token: str) -> str:
    """Page code that opens a socket the way a browser page does and reports its close."""
    return f"""new Promise((resolve) => {{
  const url = location.origin.replace(/^http/, "ws") + "/v1/ws";
  const ws = new WebSocket(url, ["docgen.v1", "bearer." + {json.dumps(token)}]);
  let frames = 0;
  ws.onmessage = () => {{ frames += 1; }};
  ws.onclose = (event) => resolve({{code: event.code, reason: event.reason, frames}});
}})"""


@pytest.mark.browser
@pytest.mark.timeout(400)  # includes a first `npm ci`
async def test_page_code_reads_the_code_and_reason_of_a_refused_handshake(
    page_driver: list[str], stack: Stack
) -> None:
    now = int(time.time())
    expired = stack.token("alice", exp=now - 3600, iat=now - 7200)
    forged = jwt.encode(
        {"sub": "alice", "aud": "docgen", "iat": now, "exp": now + 3600},
        "not-the-edge-secret-but-as-long-as-one-0123456789",
        algorithm="HS256",
    )
    plan = {
        "steps": [
            {"do": "goto"},
            {"do": "eval", "name": "expired", "js": open_socket_in_page(expired)},
            {"do": "eval", "name": "missing", "js": open_socket_in_page("")},
        ]
    }
    result = await drive(page_driver, page_url(stack, stack.token("alice")), plan)
    assert result["results"]["expired"] == {"code": 4500, "reason": "token_expired", "frames": 0}
    assert result["results"]["missing"]["code"] in (4502, 4503)  # "bearer." alone: no token

    # The page itself, given a token the edge refuses, says why and does not retry.
    plan = {
        "steps": [
            {"do": "goto"},
            {
                "do": "wait_for",
                "js": "[...document.querySelectorAll('#errors .notice')]"
                ".some((n) => n.textContent.includes('invalid_token'))",
            },
            {"do": "eval", "name": "pause", "js": "new Promise((r) => setTimeout(r, 3000))"},
        ]
    }
    result = await drive(page_driver, page_url(stack, forged), plan)
    sockets = [ws for ws in result["log"]["websockets"] if ws["url"].endswith("/v1/ws")]
    assert len(sockets) == 1, sockets  # one attempt: no retry loop with a bad token
