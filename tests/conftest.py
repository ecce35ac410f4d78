from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.stack import Stack, start_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    stack = await start_stack()
    yield stack
    await stack.close()
