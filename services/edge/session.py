"""One authenticated WebSocket: reads client frames, follows runs, and writes their events
through a bounded queue so a slow reader can never make the edge hold unbounded memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from aiohttp import WSMsgType, web

from services.common import metrics
from services.common.logs import bind_log_context, set_log_context
from services.common.tracing import new_trace_id
from services.edge import commands, frames
from services.edge.auth import Principal, TokenVerifier
from services.edge.generator_client import (
    Generator,
    GeneratorError,
    GeneratorUnavailable,
    RunEvent,
    RunInfo,
)
from services.edge.limits import FrameRateLimit
from services.edge.outbox import Outbox
from services.edge.schemas import FrameValidator
from services.edge.settings import EdgeSettings

log = logging.getLogger(__name__)


class CloseCode:
    """Close codes of the protocol (docs/protocol.md). 4000-4499: reconnect and resume;
    4500-4999: do not reconnect without changing something."""

    SERVER_SHUTDOWN = 4000
    SLOW_CONSUMER = 4001
    TOKEN_EXPIRED = 4500
    POLICY_VIOLATION = 4501


# Re-attaching to a run whose stream broke (generator restart in progress, deadline reached).
REATTACH_ATTEMPTS = 5
REATTACH_BACKOFF_S = 0.2


class SocketSession:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        principal: Principal,
        generator: Generator,
        validator: FrameValidator,
        settings: EdgeSettings,
        verifier: TokenVerifier | None = None,
        generator_limits: Mapping[str, int] | None = None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self._ws = ws
        self._principal = principal
        self._generator = generator
        self._validator = validator
        self._settings = settings
        self._verifier = verifier
        """Checks the tokens of `refresh` frames (None: `refresh` is refused)."""
        self._generator_limits = dict(generator_limits or {})
        self._expiry: asyncio.TimerHandle | None = None
        self._outbox = Outbox(ws, transport=transport, limit=settings.send_queue_frames)
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._closing = False

    async def serve(self) -> None:
        writer = asyncio.create_task(self._outbox.run())
        # First, before any answer or event.
        self._send(commands.session_frame(self._settings, self._principal, self._generator_limits))
        self._arm_expiry()
        rate = FrameRateLimit(
            rate=self._settings.frames_per_s,
            burst=self._settings.frame_burst,
            close_after=self._settings.flood_close_after,
        )
        try:
            async for message in self._ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not self._admit(rate):
                    continue
                if message.type == WSMsgType.TEXT:
                    try:
                        await self._handle_text(message.data)
                    except Exception:
                        # A frame this code did not foresee costs that frame, not the socket.
                        log.exception("a client frame could not be handled")
                        self._send(
                            frames.error_frame(
                                "internal", "this frame could not be handled", retryable=False
                            )
                        )
                elif message.type == WSMsgType.BINARY:
                    self._send(
                        frames.error_frame(
                            "binary_not_supported",
                            "send frames as UTF-8 JSON text",
                            retryable=False,
                        )
                    )
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            tasks = [*self._followers.values(), *self._pending, writer]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _arm_expiry(self) -> None:
        """Closes the socket with 4500 when its token expires; a `refresh` moves this. The
        leeway that let the token in also applies here, so a token accepted within it is not
        closed the moment the socket opens."""
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, self._principal.expires_at + self._settings.jwt_leeway_s - time.time()),
            self._close_soon,
            CloseCode.TOKEN_EXPIRED,
            "token_expired",
        )

    # --- outgoing -------------------------------------------------------------------------

    def _send(self, frame: dict[str, Any]) -> None:
        if self._closing:
            return
        if frame["type"] == "error":
            metrics.ERRORS.labels(frame["code"]).inc()
        if not self._outbox.send(frames.encode(frame), frame["ts"] if "seq" in frame else 0):
            log.warning(
                "closing a socket of a slow consumer (%d frames queued)", self._outbox.qsize()
            )
            self._close_soon(CloseCode.SLOW_CONSUMER, "slow consumer: resume from your last seq")

    async def _send_paced(self, frame: dict[str, Any]) -> None:
        """Sends a replayed event, waiting for room in the outbox: a replay goes as fast as
        the reader takes it, and never counts as falling behind (only live events can)."""
        if not self._closing:
            await self._outbox.send_paced(frames.encode(frame))

    def _close_soon(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._outbox.clear()
        self._spawn(self._ws.close(code=code, message=reason.encode()))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # --- incoming -------------------------------------------------------------------------

    def _admit(self, rate: FrameRateLimit) -> bool:
        """Whether to handle this client frame: not once the socket is closing (the token may
        have expired), and not over the frame rate, which is answered once per burst of drops
        and, when the client keeps going, with 4501."""
        if self._closing:
            return False
        if rate.admit():
            return True
        if rate.flooding:
            log.warning("closing a socket that floods frames (%d dropped)", rate.dropped_in_a_row)
            self._close_soon(CloseCode.POLICY_VIOLATION, "frame flood: too many frames per second")
        elif rate.first_drop:
            self._send(
                frames.error_frame(
                    "rate_limited",
                    f"over {self._settings.frames_per_s:g} frames per second: frames are being "
                    "dropped; slow down",
                    retryable=True,
                )
            )
        return False

    async def _handle_text(self, data: str) -> None:
        try:
            frame = frames.decode(data)
        except ValueError:
            self._send(
                frames.error_frame("invalid_json", "the frame is not valid JSON", retryable=False)
            )
            return
        problem = self._validator.validate_client(frame)
        request_id = frames.echoable_request_id(frame)
        if problem is not None:
            code, message = problem
            self._send(frames.error_frame(code, message, retryable=False, request_id=request_id))
            return
        kind = frame["type"]
        if kind == "ping":
            self._send(frames.pong_frame(request_id))
            return
        # Every request gets its own trace id; the tasks it starts inherit it, and it travels
        # to the generator (gRPC metadata), the summary service and the LLM (headers).
        with bind_log_context(
            trace_id=new_trace_id(), request_id=request_id, run_id=frame.get("run_id")
        ):
            log.info("client request", extra={"type": kind})
            if kind == "generate":
                self._start(frame, request_id)
            elif kind == "resume":
                self._resume(frame["run_id"], int(frame["after_seq"]), request_id)
            elif kind == "cancel":
                run_id = frame["run_id"]
                cancel_args = (self._generator, self._principal, run_id, request_id)
                self._spawn(self._answer(partial(commands.cancel, *cancel_args)))
            elif kind == "refresh":
                self._spawn(self._refresh(frame["token"], request_id))
            elif kind == "runs":
                runs_args = (self._generator, self._principal, request_id)
                self._spawn(self._answer(partial(commands.list_runs, *runs_args)))

    def _start(self, frame: dict[str, Any], request_id: str | None) -> None:
        opener = commands.generate_stream(self._generator, self._principal, frame, request_id)
        self._spawn(self._follow(None, 0, opener, request_id))

    def _resume(self, run_id: str, after_seq: int, request_id: str | None) -> None:
        previous = self._followers.pop(run_id, None)
        if previous is not None:
            previous.cancel()  # the client restarts this run's stream from its own cursor

        def open_stream(
            run_id_: str | None, after: int
        ) -> AsyncGenerator[RunInfo | RunEvent, None]:
            return self._generator.follow(run_id, user_id=self._principal.user_id, after_seq=after)

        self._spawn(self._follow(run_id, after_seq, open_stream, request_id, ack="resume"))

    async def _follow(
        self,
        run_id: str | None,
        after_seq: int,
        open_stream: commands.StreamOpener,
        request_id: str | None,
        ack: str | None = None,
    ) -> None:
        """Relays one run's events to this socket until `run_end`, re-attaching from the last
        relayed seq if the stream to the generator breaks. With `ack` (a `resume`), the run's
        first `RunInfo` is answered with an `ack` before any replayed event. Events the run
        had already logged when the stream opened are replayed paced (waiting for room in the
        outbox); later ones are live, and a reader too slow for those is closed (4001)."""
        last_seq = after_seq
        failures = 0
        replayed_through = 0  # the run's last seq when the current stream opened
        current = asyncio.current_task()
        if run_id is not None and current is not None:
            self._followers[run_id] = current  # type: ignore[assignment]
        try:
            while True:
                try:
                    # aclosing: leaving early (run_end, a cancel) hangs up on the generator now.
                    async with contextlib.aclosing(open_stream(run_id, last_seq)) as events:
                        async for event in events:
                            if isinstance(event, RunInfo):
                                if ack is not None:
                                    self._send(
                                        frames.ack_frame(
                                            ack,
                                            request_id,
                                            run_id=event.run_id,
                                            status=frames.status_name(event.status),
                                            last_seq=event.last_seq,
                                        )
                                    )
                                    ack = None  # once: a re-attach is not a new answer
                                replayed_through = event.last_seq
                                continue
                            if run_id is None and current is not None:
                                run_id = event.run_id
                                self._followers[run_id] = current  # type: ignore[assignment]
                                set_log_context(run_id=run_id)  # this task's context only
                            last_seq = event.seq
                            failures = 0
                            if event.seq <= replayed_through:
                                await self._send_paced(frames.event_to_frame(event))
                            else:
                                self._send(frames.event_to_frame(event))
                            if event.HasField("run_end"):
                                return
                    return
                except GeneratorUnavailable as error:
                    # Before the first event (no run id yet) a retry could start a second run.
                    if run_id is not None and failures < REATTACH_ATTEMPTS:
                        failures += 1
                        await asyncio.sleep(REATTACH_BACKOFF_S * failures)
                        continue
                    self._send_error(error, request_id=request_id, run_id=run_id)
                    return
                except GeneratorError as error:
                    self._send_error(error, request_id=request_id, run_id=run_id)
                    return
        finally:
            if run_id is not None and self._followers.get(run_id) is current:
                del self._followers[run_id]

    async def _answer(self, answer: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        # A factory, not a coroutine: a task cancelled before its first step (the socket
        # closed) never runs its body, and a coroutine made outside it would never be awaited.
        self._send(await answer())

    async def _refresh(self, token: str, request_id: str | None) -> None:
        answer, principal = await commands.refresh(
            self._verifier, self._principal, token, request_id
        )
        if principal is not None:
            self._principal = principal
            self._arm_expiry()  # the new token's expiry
        self._send(answer)

    def _send_error(
        self, error: GeneratorError, *, request_id: str | None, run_id: str | None
    ) -> None:
        self._send(commands.generator_error_frame(error, request_id=request_id, run_id=run_id))


async def close_for_shutdown(ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        await ws.close(
            code=CloseCode.SERVER_SHUTDOWN, message=b"server restarting: reconnect and resume"
        )
