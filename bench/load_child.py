"""Background streams in a process of their own, for a scenario that times something else
beside them (the handshakes under load): `EdgeStreams` receiving thousands of frames a second
would otherwise share the timing client's event loop, and its handshakes would wait behind
them in the client, not in the edge.

    python -m bench.load_child WS_URL STREAMS TOKENS RAMP_S

Line protocol on stdin/stdout (JSON lines out): prints `{"flowing": true|false}` once the first
token arrived (or `FLOW_WAIT_S` passed); then reads `window START END` (unix seconds), prints
`{"delay_ms": <bench.stats.describe>, "ended_early": bool}` for the tokens received in that
window, closes its
sockets and exits. It also exits, closing them, when stdin closes (the parent died)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.load import SETTLE_S, EdgeStreams
from bench.stats import describe

FLOW_WAIT_S = 15.0


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def main(ws_url: str, streams: int, tokens: int, ramp_s: float) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    load = EdgeStreams(ws_url, streams, tokens)
    try:
        last_start = await load.start(ramp_s)
        await asyncio.sleep(max(0.0, last_start + SETTLE_S - time.time()))
        # On a busy machine the first tokens may take longer than the settle time.
        flowing_by = time.monotonic() + FLOW_WAIT_S
        while not len(load.samples.delay_s) and time.monotonic() < flowing_by:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        _say({"flowing": bool(len(load.samples.delay_s))})
        line = (await stdin.readline()).decode().split()
        if len(line) == 3 and line[0] == "window":
            start, end = float(line[1]), float(line[2])
            # The description, not the samples: a line of tens of thousands of numbers would
            # overrun the parent's pipe reader.
            _say(
                {
                    "delay_ms": describe(load.samples.window(start, end), scale=1000),
                    "ended_early": load.first_end_at is not None and load.first_end_at < end,
                }
            )
    finally:
        await load.finish(timeout_s=0.0)  # the runs are cancelled after the generator's grace


if __name__ == "__main__":
    url, count, length, ramp = sys.argv[1:5]
    asyncio.run(main(url, int(count), int(length), float(ramp)))
