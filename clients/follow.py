"""Follows one run over the edge's WebSocket until its `run_end`: drops events already seen
(by seq), reconnects and resumes after a drop, and turns an interrupt into one `cancel`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from clients.connection import http_session, open_socket
from clients.console import Console
from clients.errors import AuthRefused, EdgeUnreachable, Interrupted, RunFailed, UsageError
from clients.explain import explain

FrameHandler = Callable[[dict[str, Any]], None]

# Close codes after which the same connection would be refused again (RFC 6455 §7.4.1), plus
# the protocol's 4500-4999 range; 4000-4499 and abnormal closures mean "reconnect and resume".
_FINAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
TOKEN_EXPIRED = 4500

_SOCKET_ENDED = frozenset(
    {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    }
)
# `generate --plan`: the planner said no, or there is none (docs/planner.md).
_PLAN_REFUSALS = frozenset({"plan_not_found", "plan_forbidden", "planner_not_configured"})
_REFUSED_FRAME_CODES = frozenset(
    {"invalid_json", "invalid_frame", "invalid_outline", "unknown_type"}
)


@dataclass(frozen=True)
class ReconnectPolicy:
    attempts: int = 5
    """Reconnections in a row that bring no new event before giving up."""
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay_s(self, failures: int) -> float:
        base = min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1))
        return base * random.uniform(0.8, 1.2)  # spread clients dropped by the same edge restart


class _Dropped(Exception):
    """The socket ended before `run_end`, for a reason worth a reconnect."""


class RunFollower:
    def __init__(
        self,
        *,
        url: str,
        token: str,
        request_id: str,
        on_event: FrameHandler,
        console: Console,
        interrupt: asyncio.Event,
        policy: ReconnectPolicy | None = None,
        cancel_wait_s: float = 5.0,
        renew_token: Callable[[], str] | None = None,
    ) -> None:
        self._url = url
        self._token = token
        self._renew_token = renew_token
        """Mints a new token when the edge closes with 4500 (expired); None: give up there."""
        self._outline: dict[str, Any] | None = None
        self._request_id = request_id
        self._on_event = on_event
        self._console = console
        self._interrupt = interrupt
        self._policy = policy or ReconnectPolicy()
        self._cancel_wait_s = cancel_wait_s
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._deadline: asyncio.Timeout | None = None
        self._cancel_sent = False
        self._events_seen = 0
        self.run_id: str | None = None
        self.last_seq = 0
        """Highest seq received: every event up to it has been handed to `on_event`."""
        self.gaps: list[str] = []
        self.cancel_requested = False

    async def generate(self, outline: dict[str, Any]) -> dict[str, Any]:
        """Starts a run and returns its `run_end` frame."""
        self._outline = outline
        opening = {"type": "generate", "outline": outline, "request_id": self._request_id}
        return await self._run(opening)

    async def generate_plan(self, document_id: str) -> dict[str, Any]:
        """Starts a run from the planner's outline of `document_id` (docs/planner.md) and
        returns its `run_end` frame."""
        opening = {
            "type": "generate",
            "plan": {"document_id": document_id},
            "request_id": self._request_id,
        }
        return await self._run(opening)

    async def resume(self, run_id: str, after_seq: int) -> dict[str, Any]:
        """Replays a run's events after `after_seq`, follows it, and returns its `run_end`."""
        self.run_id = run_id
        self.last_seq = after_seq
        return await self._run(self._resume_frame())

    def _resume_frame(self) -> dict[str, Any]:
        return {
            "type": "resume",
            "run_id": self.run_id,
            "after_seq": self.last_seq,
            "request_id": self._request_id,
        }

    async def _run(self, opening: dict[str, Any]) -> dict[str, Any]:
        watcher = asyncio.create_task(self._watch_interrupt())
        try:
            async with asyncio.timeout(None) as self._deadline:
                return await self._follow(opening)
        except TimeoutError:
            if self._deadline is None or not self._deadline.expired():
                raise
            raise self._interrupted() from None
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    def _interrupted(self) -> Interrupted:
        if self.run_id is None:
            return Interrupted("interrupted before the run started")
        if self._cancel_sent:
            return Interrupted(
                f"interrupted: cancel sent, but run {self.run_id} did not end within "
                f"{self._cancel_wait_s:.0f} s; the server stops it on its own"
            )
        return Interrupted(
            f"interrupted while disconnected: run {self.run_id} goes on until the server's "
            "grace period for unfollowed runs ends"
        )

    async def _follow(self, opening: dict[str, Any]) -> dict[str, Any]:
        async with http_session() as session:
            frame = opening
            failures = 0
            connected_once = False
            while True:
                try:
                    ws = await open_socket(session, self._url, self._token)
                except EdgeUnreachable as error:
                    if not connected_once or not error.transient:
                        raise
                    failures += 1
                    await self._pause(failures, error.message)
                    continue
                connected_once = True
                seq_before = self.last_seq
                try:
                    return await self._exchange(ws, frame)
                except _Dropped as drop:
                    reason = str(drop)
                if self.run_id is None:  # nothing to resume, and a new generate may duplicate it
                    raise EdgeUnreachable(
                        f"{reason} before the run started; run the command again", transient=False
                    )
                if self.last_seq > seq_before:
                    failures = 0
                failures += 1
                await self._pause(failures, reason)
                frame = self._resume_frame()

    async def _pause(self, failures: int, reason: str) -> None:
        if failures > self._policy.attempts:
            raise EdgeUnreachable(
                f"{reason}; gave up after {self._policy.attempts} reconnections without progress"
            )
        delay = self._policy.delay_s(failures)
        self._console.info(
            f"docgen: {reason}; reconnecting in {delay:.1f} s to resume run {self.run_id} "
            f"after seq {self.last_seq} ({failures}/{self._policy.attempts})"
        )
        await asyncio.sleep(delay)

    async def _exchange(
        self, ws: aiohttp.ClientWebSocketResponse, opening: dict[str, Any]
    ) -> dict[str, Any]:
        """Sends the opening frame and reads until `run_end` (returned) or the socket ends."""
        self._ws = ws
        try:
            try:
                await ws.send_str(json.dumps(opening))
            except (ConnectionError, aiohttp.ClientError) as error:
                raise _Dropped(f"the connection broke ({type(error).__name__})") from None
            if self.cancel_requested:
                await self._send_cancel()
            while True:
                message = await ws.receive()
                if message.type == aiohttp.WSMsgType.TEXT:
                    end = await self._handle(message.data)
                    if end is not None:
                        return end
                elif message.type in _SOCKET_ENDED:
                    reason = message.extra if message.type == aiohttp.WSMsgType.CLOSE else None
                    raise self._closed(ws.close_code, reason)
        finally:
            self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()

    def _closed(self, code: int | None, reason: str | None) -> Exception:
        """The error for a socket that ended without `run_end`."""
        described = "no close code"
        if code is not None:
            described = f"close code {code}" + (f" {reason!r}" if reason else "")
        if code == TOKEN_EXPIRED:
            if self._renew_token is not None and self.run_id is not None:
                self._token = self._renew_token()
                return _Dropped(f"the token expired ({described}); a new one was minted")
            return AuthRefused(f"your token expired during the run ({described})")
        if code == 1009:
            return UsageError(f"the edge refused a frame as too large ({described})")
        if code is not None and (code in _FINAL_CLOSE_CODES or 4500 <= code <= 4999):
            return RunFailed(f"the edge closed the connection for good ({described})")
        if self.run_id is None:
            return EdgeUnreachable(
                f"the connection closed before the run started ({described}); "
                "run the command again",
                transient=False,
            )
        return _Dropped(f"the edge closed the connection ({described})")

    async def _handle(self, data: str) -> dict[str, Any] | None:
        """Hands a new run event to `on_event`; returns it if it is the `run_end`."""
        try:
            frame = json.loads(data)
        except ValueError:
            raise RunFailed(
                "the edge sent a frame that is not JSON; is --url a docgen edge?"
            ) from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise RunFailed("the edge sent a frame without a type; is --url a docgen edge?")
        seq = frame.get("seq")
        if not isinstance(seq, int):
            if frame["type"] == "error":
                self._refused(frame)
            return None  # pong, or a frame about something other than our run
        if self.run_id is None:
            self.run_id = frame.get("run_id")
        elif frame.get("run_id") != self.run_id:
            return None
        if seq <= self.last_seq:
            return None  # replayed after a reconnect: already handled
        if seq != self.last_seq + 1:
            self.gaps.append(f"run events {self.last_seq + 1}..{seq - 1} never arrived")
        self.last_seq = seq
        self._events_seen += 1
        self._on_event(frame)
        if frame["type"] == "run_started" and self.cancel_requested:
            await self._send_cancel()
        return frame if frame["type"] == "run_end" else None

    def _refused(self, frame: dict[str, Any]) -> None:
        """An error about one of our frames (no seq): raises what it means for the command."""
        code, message = str(frame.get("code")), str(frame.get("message"))
        if code in _REFUSED_FRAME_CODES:
            explained = explain(code, message, self._outline)
            raise UsageError(f"the edge refused the outline: {explained}")
        if code in _PLAN_REFUSALS:
            raise UsageError(f"the server could not read the plan: {message} ({code})")
        if code == "run_not_found":
            if self._events_seen:
                raise RunFailed(f"run {self.run_id} is no longer on the server ({message})")
            raise UsageError(
                f"run {self.run_id} not found ({message}); check RUN_ID and that --sub/--token "
                "names the user who started it"
            )
        if code == "cursor_out_of_range":
            raise UsageError(
                f"--after {self.last_seq} is past the end of run {self.run_id}: {message}"
            )
        if frame.get("retryable") and self.run_id is not None:
            raise _Dropped(f"the server could not follow the run ({code}: {message})")
        raise RunFailed(f"the server could not start the run ({code}): {message}; try again later")

    async def _watch_interrupt(self) -> None:
        await self._interrupt.wait()
        self.cancel_requested = True
        loop = asyncio.get_running_loop()
        assert self._deadline is not None
        if self._ws is None:
            self._deadline.reschedule(loop.time())  # no connection to cancel over: stop now
            return
        self._console.info(
            f"docgen: cancelling run {self.run_id or '(starting)'}; waiting up to "
            f"{self._cancel_wait_s:.0f} s for it to end (Ctrl-C again quits at once)"
        )
        self._deadline.reschedule(loop.time() + self._cancel_wait_s)
        await self._send_cancel()

    async def _send_cancel(self) -> None:
        ws = self._ws
        if ws is None or ws.closed or self.run_id is None:
            return  # sent once the run id is known (run_started) or the socket is back
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            cancel = {"type": "cancel", "run_id": self.run_id, "request_id": self._request_id}
            await ws.send_str(json.dumps(cancel))
            self._cancel_sent = True
