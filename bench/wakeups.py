"""What one event-loop wake-up costs this machine in CPU, with nothing else to do: a uvloop
loop sleeping to a fixed rate, CPU seconds per wake-up. At one stream every token wakes each
process several times (the LLM's socket, gRPC's I/O thread, the loop's self-pipe), so the CPU
per token at low stream counts is mostly this cost times the wake-ups, not docgen's code.

    python -m bench.wakeups            # 30, 300 and 3,000 wake-ups per second, 5 s each
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop


async def cpu_per_wakeup(rate: float, seconds: float) -> tuple[int, float]:
    """(wake-ups, CPU seconds per wake-up) of `seconds` of sleeping to `rate` per second."""
    loop = asyncio.get_running_loop()
    period = 1 / rate
    wakeups = 0
    cpu_start, wall_start = time.process_time(), loop.time()
    next_at = wall_start
    while loop.time() - wall_start < seconds:
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        wakeups += 1
    return wakeups, (time.process_time() - cpu_start) / wakeups


def main(argv: list[str]) -> None:
    seconds = float(argv[0]) if argv else 5.0
    for rate in (30, 300, 3000):
        wakeups, cpu_s = uvloop.run(cpu_per_wakeup(rate, seconds))
        print(f"{rate:>5}/s: {wakeups:>6} wake-ups, {cpu_s * 1e6:6.1f} µs CPU per wake-up")


if __name__ == "__main__":
    main(sys.argv[1:])
