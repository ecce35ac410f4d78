"""`SocketSession` against a fake generator: what a socket sends for the run events and the
`GeneratorError`s a `Generator` yields, with no gRPC anywhere. A small aiohttp app serves one
session per socket, driven by the `aiohttp_client` fixture."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from docgen.v1 import events_pb2, outline_pb2

from services.edge import session as session_module
from services.edge.auth import Principal
from services.edge.generator_client import (
    GeneratorError,
    GeneratorUnavailable,
    RunEvent,
    RunInfo,
    RunNotFound,
)
from services.edge.outbox import Outbox
from services.edge.schemas import FrameValidator
from services.edge.session import SocketSession
from services.edge.settings import EdgeSettings

RUN_ID = "run_fake"
OUTLINE = {
    "document_id": "doc-1",
    "title": "A title",
    "sections": [{"id": "s1", "title": "One", "target_tokens": 10}],
}

# One scripted stream: the events it yields, then the error it raises (None: it just ends).
Script = tuple[list[RunEvent], GeneratorError | None]


def event(seq: int, **payload: Any) -> RunEvent:
    return events_pb2.RunEvent(run_id=RUN_ID, seq=seq, ts_unix_ms=1, **payload)


def run_events() -> list[RunEvent]:
    return [
        event(1, run_started=events_pb2.RunStarted(document_id="doc-1", section_ids=["s1"])),
        event(2, section_start=events_pb2.SectionStart(section_id="s1", attempt=1)),
        event(3, section_chunk=events_pb2.SectionChunk(section_id="s1", delta="Hello")),
        event(4, run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_COMPLETED)),
    ]


class FakeGenerator:
    """Plays one script per `start`/`follow` call, in order, and records the calls."""

    def __init__(self, *scripts: Script, cancel_error: GeneratorError | None = None) -> None:
        self.scripts = list(scripts)
        self.calls: list[tuple[str, str, int]] = []  # (rpc, user, after_seq)
        self.closed = 0  # streams whose reader hung up or finished
        self.cancel_error = cancel_error
        self.cancelled: list[str] = []

    def start(
        self, outline: outline_pb2.Outline, *, user_id: str, request_id: str
    ) -> AsyncGenerator[RunEvent, None]:
        self.calls.append(("start", user_id, 0))
        return self._play()

    def follow(
        self, run_id: str, *, user_id: str, after_seq: int
    ) -> AsyncGenerator[RunInfo | RunEvent, None]:
        self.calls.append(("follow", user_id, after_seq))
        return self._play()

    async def cancel(self, run_id: str, *, user_id: str) -> events_pb2.RunStatus.ValueType:
        self.cancelled.append(run_id)
        if self.cancel_error is not None:
            raise self.cancel_error
        return events_pb2.RUN_STATUS_RUNNING

    async def list_runs(self, *, user_id: str) -> list[RunInfo]:
        return []

    async def _play(self) -> AsyncGenerator[RunEvent, None]:
        events, error = self.scripts.pop(0) if self.scripts else ([], None)
        try:
            for item in events:
                yield item
            if error is not None:
                raise error
            if not events:
                await asyncio.Event().wait()  # an idle run: nothing until the reader leaves
        finally:
            self.closed += 1


Connect = Callable[..., Awaitable[Any]]


@pytest.fixture
def connect(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]]) -> Connect:
    """Opens a socket served by a session on `generator`; `settings`, `send_at_once` (give the
    session its transport, as the edge does) and the client's `compress` are the options."""

    async def open_socket(
        generator: FakeGenerator,
        *,
        settings: EdgeSettings | None = None,
        send_at_once: bool = False,
        compress: int = 0,
    ) -> Any:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await SocketSession(
                ws,
                principal=Principal(user_id="alice", expires_at=time.time() + 3600),
                generator=generator,
                validator=FrameValidator(),
                settings=settings or EdgeSettings(),
                transport=request.transport if send_at_once else None,  # type: ignore[arg-type]
            ).serve()
            return ws

        app = web.Application()
        app.router.add_get("/ws", handler)
        client = await aiohttp_client(app)
        ws = await client.ws_connect("/ws", compress=compress)
        assert (await ws.receive_json())["type"] == "session"  # always the first frame
        return ws

    return open_socket


async def frames_until(ws: Any, last_type: str) -> list[dict[str, Any]]:
    received = []
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), 10)
        received.append(frame)
        if frame["type"] == last_type:
            return received


async def test_generate_relays_the_run_events_as_frames_in_order(connect: Connect) -> None:
    generator = FakeGenerator((run_events(), None))
    ws = await connect(generator)
    await ws.send_json({"type": "generate", "request_id": "r1", "outline": OUTLINE})
    received = await frames_until(ws, "run_end")
    assert [(f["type"], f["seq"]) for f in received] == [
        ("run_started", 1),
        ("section_start", 2),
        ("section_chunk", 3),
        ("run_end", 4),
    ]
    assert received[2]["delta"] == "Hello"
    assert generator.calls == [("start", "alice", 0)]
    await ws.close()
    assert generator.closed == 1


async def test_a_broken_follow_reattaches_from_the_last_relayed_seq(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "REATTACH_BACKOFF_S", 0.0)
    events = run_events()
    generator = FakeGenerator(
        (events[:2], GeneratorUnavailable("gone")),
        ([], GeneratorUnavailable("still gone")),
        (events[2:], None),
    )
    ws = await connect(generator)
    await ws.send_json({"type": "generate", "outline": OUTLINE})
    received = await frames_until(ws, "run_end")
    assert [f["seq"] for f in received] == [1, 2, 3, 4]  # no error frame, nothing twice
    assert generator.calls == [
        ("start", "alice", 0),
        ("follow", "alice", 2),
        ("follow", "alice", 2),
    ]


async def test_reattaching_gives_up_after_its_attempts_with_one_error_frame(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "REATTACH_BACKOFF_S", 0.0)
    broken: Script = (
        [],
        GeneratorUnavailable("the document generator is unreachable; retry shortly"),
    )
    generator = FakeGenerator(*[broken] * (session_module.REATTACH_ATTEMPTS + 1))
    ws = await connect(generator)
    await ws.send_json({"type": "resume", "request_id": "r2", "run_id": RUN_ID, "after_seq": 3})
    (error,) = await frames_until(ws, "error")
    assert error["code"] == "generator_unavailable"
    assert error["retryable"] is True
    assert (error["request_id"], error["run_id"]) == ("r2", RUN_ID)
    assert len(generator.calls) == session_module.REATTACH_ATTEMPTS + 1
    assert {call[2] for call in generator.calls} == {3}


async def test_a_generator_down_at_start_is_not_retried(connect: Connect) -> None:
    # Retrying a start whose run id is unknown could start the run twice.
    generator = FakeGenerator(([], GeneratorUnavailable("unreachable")), (run_events(), None))
    ws = await connect(generator)
    await ws.send_json({"type": "generate", "request_id": "r3", "outline": OUTLINE})
    (error,) = await frames_until(ws, "error")
    assert (error["code"], error["request_id"]) == ("generator_unavailable", "r3")
    assert "run_id" not in error
    assert generator.calls == [("start", "alice", 0)]


async def test_resume_of_an_unknown_run_is_an_error_frame_not_a_retry(connect: Connect) -> None:
    generator = FakeGenerator(([], RunNotFound("no such run: unknown, expired, or not yours")))
    ws = await connect(generator)
    await ws.send_json({"type": "resume", "run_id": "run_nope", "after_seq": 0})
    (error,) = await frames_until(ws, "error")
    assert (error["code"], error["retryable"], error["run_id"]) == (
        "run_not_found",
        False,
        "run_nope",
    )
    assert len(generator.calls) == 1


async def test_a_failed_cancel_is_answered_with_its_error(connect: Connect) -> None:
    generator = FakeGenerator(cancel_error=RunNotFound("no such run"))
    ws = await connect(generator)
    await ws.send_json({"type": "cancel", "request_id": "r4", "run_id": "run_x"})
    (error,) = await frames_until(ws, "error")
    assert (error["code"], error["request_id"], error["run_id"]) == (
        "run_not_found",
        "r4",
        "run_x",
    )
    assert generator.cancelled == ["run_x"]


async def test_a_second_resume_of_a_run_hangs_up_the_first_stream(connect: Connect) -> None:
    generator = FakeGenerator(([], None), (run_events()[3:], None))
    ws = await connect(generator)
    await ws.send_json({"type": "resume", "run_id": RUN_ID, "after_seq": 1})
    await ws.send_json({"type": "ping", "request_id": "p"})
    await frames_until(ws, "pong")
    await ws.send_json({"type": "resume", "run_id": RUN_ID, "after_seq": 3})
    (end,) = await frames_until(ws, "run_end")
    assert end["seq"] == 4
    for _ in range(100):  # the first stream is closed by its cancelled task, soon after
        if generator.closed == 2:
            break
        await asyncio.sleep(0.01)
    assert generator.closed == 2


async def test_closing_the_socket_hangs_up_every_stream(connect: Connect) -> None:
    generator = FakeGenerator(([], None))
    ws = await connect(generator)
    await ws.send_json({"type": "resume", "run_id": RUN_ID, "after_seq": 0})
    await ws.send_json({"type": "ping"})
    await frames_until(ws, "pong")
    await ws.close()
    for _ in range(100):
        if generator.closed == 1:
            break
        await asyncio.sleep(0.01)
    assert generator.closed == 1


@pytest.mark.parametrize("compress", [0, 15])
async def test_frames_sent_at_once_or_through_the_outbox_arrive_whole_and_in_order(
    connect: Connect, monkeypatch: pytest.MonkeyPatch, compress: int
) -> None:
    # A frame goes out at once when nothing is queued before it and the socket takes it, else
    # through the outbox; never for a compressed socket (aiohttp may compress a big frame in a
    # thread, and a frame sent meanwhile would overtake it).
    sent_at_once: list[bool] = []
    send_now = Outbox._send_now

    def spy(self: Outbox, data: str) -> bool:
        sent_at_once.append(send_now(self, data))
        return sent_at_once[-1]

    monkeypatch.setattr(Outbox, "_send_now", spy)
    chunks = 2000
    events = run_events()[:2] + [
        event(3 + i, section_chunk=events_pb2.SectionChunk(section_id="s1", delta=f"{i:05}" * 600))
        for i in range(chunks)
    ]
    events.append(
        event(3 + chunks, run_end=events_pb2.RunEnd(status=events_pb2.RUN_STATUS_COMPLETED))
    )

    ws = await connect(
        PacedGenerator(events),
        settings=EdgeSettings(send_queue_frames=chunks * 2),
        send_at_once=True,
        compress=compress,
    )
    await ws.send_json({"type": "generate", "request_id": "r1", "outline": OUTLINE})
    received = [await ws.receive_json()]
    await asyncio.sleep(0.3)  # not reading: the socket's buffers fill, frames queue
    received += await frames_until(ws, "run_end")
    assert [f["seq"] for f in received] == list(range(1, chunks + 4))
    deltas = [f["delta"] for f in received if f["type"] == "section_chunk"]
    assert deltas == [f"{i:05}" * 600 for i in range(chunks)]
    if compress:
        assert sent_at_once and not any(sent_at_once)
    else:  # both ways were taken
        assert any(sent_at_once) and not all(sent_at_once)


class PacedGenerator(FakeGenerator):
    """Yields its events with a pause of the event loop every few, as a live run does."""

    def __init__(self, events: list[RunEvent]) -> None:
        super().__init__()
        self.events = events

    async def _play(self) -> AsyncGenerator[RunEvent, None]:
        for index, item in enumerate(self.events):
            if index % 20 == 0:
                await asyncio.sleep(0)
            yield item


class RecordingSocket:
    """Stands in for the WebSocket and its transport: records what is sent at once."""

    compress = 0

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.buffered = 0

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


async def test_a_frame_never_overtakes_one_queued_or_being_written_before_it() -> None:
    socket = RecordingSocket()
    outbox = Outbox(socket, transport=socket, limit=10)  # type: ignore[arg-type]
    assert outbox.send("1")  # nothing before it: sent at once
    assert socket.sent == ["1"] and outbox.qsize() == 0
    socket.buffered = 10  # the kernel has not taken everything: queue
    assert outbox.send("2")
    socket.buffered = 0  # drained, but frame 2 still waits in the queue: queue behind it
    assert outbox.send("3")
    assert socket.sent == ["1"] and outbox.qsize() == 2
    outbox.clear()
    outbox._writing = True  # the writer is inside a send
    assert outbox.send("4")
    assert socket.sent == ["1"] and outbox.qsize() == 1


async def test_a_full_outbox_refuses_the_frame_for_the_session_to_close_the_socket() -> None:
    socket = RecordingSocket()
    socket.buffered = 10
    outbox = Outbox(socket, transport=socket, limit=2)  # type: ignore[arg-type]
    assert outbox.send("1") and outbox.send("2")
    assert not outbox.send("3")
    assert socket.sent == [] and outbox.qsize() == 2
