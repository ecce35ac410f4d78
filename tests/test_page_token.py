"""The demo page keeps its token out of the address bar (issue 18, item 9): the `#token=…` it
is opened with moves to this tab's sessionStorage and leaves the URL and the history entry,
and the page still connects with it. Real headless Chromium, as in tests/test_browser.py."""

from __future__ import annotations

import pytest

from tests.support.stack import Stack, start_stack
from tests.test_browser import CONNECTED, drive, page_driver, page_url

__all__ = ["page_driver"]  # the fixture, shared with tests/test_browser.py

pytestmark = pytest.mark.browser


async def test_the_token_leaves_the_address_bar_for_session_storage(
    page_driver: list[str],
) -> None:
    stack: Stack = await start_stack()
    try:
        await stack.restart_edge()  # on its real port: its own origin is then the page's
        token = stack.token("page-user")
        plan = {
            "steps": [
                {"do": "goto"},
                {"do": "wait_for", "js": CONNECTED},
                {
                    "do": "eval",
                    "name": "where",
                    "js": "({href: location.href, hash: location.hash,"
                    " stored: sessionStorage.getItem('docgen.token')})",
                },
            ]
        }
        final = await drive(page_driver, page_url(stack, token), plan)
    finally:
        await stack.close()
    where = final["results"]["where"]
    assert where["hash"] == "" and token not in where["href"], where["href"]
    assert where["stored"] == token
