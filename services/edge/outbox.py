"""A socket's outgoing frames, in order: sent at once when the socket can take them, else
queued for the socket's one writer task. A reader that lets the queue fill is a slow consumer
(the session closes it, 4001); a replay waits for room instead (`send_paced`)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from services.common import metrics


def _observe_relay(event_ts_ms: int) -> None:
    if event_ts_ms:
        metrics.RELAY_LATENCY_SECONDS.observe(max(0.0, time.time() - event_ts_ms / 1000))


class Outbox:
    """`ws`'s outgoing frames. `transport`: the socket's, for sending a frame at once when
    nothing waits before it (None: every frame is queued); `limit`: frames that may queue."""

    def __init__(
        self, ws: web.WebSocketResponse, *, transport: asyncio.Transport | None, limit: int
    ) -> None:
        self._ws = ws
        self._transport = transport
        # (encoded frame, its event time in Unix ms or 0): the time feeds the relay metric.
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue(maxsize=limit)
        self._writing = False
        """The writer is inside a send (a frame sent now would overtake it)."""

    def send(self, data: str, event_ts_ms: int = 0) -> bool:
        """Sends or queues one frame; False when the queue is full (a slow consumer)."""
        if self._queue.empty() and not self._writing and self._send_now(data):
            _observe_relay(event_ts_ms)
            return True
        try:
            self._queue.put_nowait((data, event_ts_ms))
        except asyncio.QueueFull:
            return False
        return True

    async def send_paced(self, data: str) -> None:
        """Queues a frame, waiting for room: a replay goes as fast as the reader takes it and
        never counts as falling behind. (No relay-latency sample: a replayed event's time is
        when it first happened.)"""
        await self._queue.put((data, 0))

    def qsize(self) -> int:
        return self._queue.qsize()

    def clear(self) -> None:
        """Drops what is queued (the socket is closing: its client resumes from the last seq
        it actually received)."""
        while not self._queue.empty():
            self._queue.get_nowait()

    async def run(self) -> None:
        """The writer: sends the queued frames in order, waiting for the socket to drain."""
        while True:
            data, event_ts_ms = await self._queue.get()
            self._writing = True
            try:
                await self._ws.send_str(data)
            finally:
                self._writing = False
            _observe_relay(event_ts_ms)

    def _send_now(self, data: str) -> bool:
        """Sends `data` without the queue when the socket can take it at once: the kernel took
        everything written so far, and the frame is not compressed (aiohttp may compress a
        large frame in a thread, and a frame sent meanwhile would overtake it). Saves the
        writer task's wake-up and two queue operations per frame on the relay's per-token path
        (docs/performance.md). Returns False, having sent nothing, when the frame must queue."""
        transport = self._transport
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
            or self._ws.compress
        ):
            return False
        sending = self._ws.send_str(data)
        try:
            # Uncompressed, aiohttp writes the frame to the transport before its first await,
            # which only waits for a paused transport to drain: with an empty buffer it never
            # suspends.
            sending.send(None)
        except StopIteration:
            return True
        except Exception:  # the writer meets the same error, as it did before this path
            return False
        # Suspended on a drain after writing (not expected with an empty buffer): the frame is
        # in the transport; later frames queue behind the full buffer.
        sending.close()
        return True
