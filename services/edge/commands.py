"""The answers of a socket that need no run stream: the `session` frame it opens with, and
the revision-2 commands answered by one frame each (`cancel`, `runs`, `refresh`). Each
builds that frame from the generator's or the verifier's reply; `session.SocketSession` sends
it and keeps the socket's state."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Mapping
from importlib import metadata
from typing import Any

from services.edge import frames
from services.edge.auth import AuthError, Principal, TokenVerifier
from services.edge.generator_client import Generator, GeneratorError, RunEvent, RunInfo
from services.edge.settings import EdgeSettings

log = logging.getLogger(__name__)

# Opens a run's stream after a seq: (None, 0) starts the run, (run_id, seq) re-attaches.
StreamOpener = Callable[[str | None, int], AsyncGenerator[RunInfo | RunEvent, None]]


def _server_version() -> str:
    try:
        return metadata.version("docgen")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


SERVER_VERSION = _server_version()


def session_frame(
    settings: EdgeSettings, principal: Principal, generator_limits: Mapping[str, int]
) -> dict[str, Any]:
    """The first frame on every socket: who it is, until when, and the limits it can hit."""
    return frames.session_frame(
        session_id="ses_" + secrets.token_urlsafe(12),
        user=principal.display_name,
        heartbeat_s=settings.heartbeat_s,
        token_expires_at_s=principal.expires_at,
        limits={
            "max_frame_bytes": settings.max_frame_bytes,
            "frames_per_s": settings.frames_per_s,
            "frame_burst": settings.frame_burst,
            "send_queue_frames": settings.send_queue_frames,
            "max_sockets_per_user": settings.max_sockets_per_user,
            **generator_limits,
        },
        version=SERVER_VERSION,
    )


def generator_error_frame(
    error: GeneratorError, *, request_id: str | None, run_id: str | None
) -> dict[str, Any]:
    return frames.error_frame(
        error.code,
        error.message,
        retryable=error.retryable,
        request_id=request_id,
        run_id=run_id,
    )


async def cancel(
    generator: Generator, principal: Principal, run_id: str, request_id: str | None
) -> dict[str, Any]:
    try:
        status = await generator.cancel(run_id, user_id=principal.user_id)
    except GeneratorError as error:
        return generator_error_frame(error, request_id=request_id, run_id=run_id)
    return frames.ack_frame("cancel", request_id, run_id=run_id, status=frames.status_name(status))


async def list_runs(
    generator: Generator, principal: Principal, request_id: str | None
) -> dict[str, Any]:
    try:
        runs = await generator.list_runs(user_id=principal.user_id)
    except GeneratorError as error:
        return generator_error_frame(error, request_id=request_id, run_id=None)
    return frames.ack_frame("runs", request_id, runs=[frames.run_listing(run) for run in runs])


async def refresh(
    verifier: TokenVerifier | None, principal: Principal, token: str, request_id: str | None
) -> tuple[dict[str, Any], Principal | None]:
    """The answer, and the socket's new principal: only a token for the same user and issuer
    gives one; anything else is answered with an error and changes nothing (None)."""
    if verifier is None:
        message = "this edge cannot refresh tokens"
        return frames.error_frame("internal", message, retryable=False, request_id=request_id), None
    try:
        renewed = await verifier.verify(token)
    except AuthError as error:
        refused = frames.error_frame(
            error.code,
            f"{error.message}; the socket keeps its current token",
            retryable=error.code == "auth_unavailable",
            request_id=request_id,
        )
        return refused, None
    if (renewed.user_id, renewed.issuer) != (principal.user_id, principal.issuer):
        mismatch = frames.error_frame(
            "token_user_mismatch",
            "the new token is for another user or issuer; the socket keeps its current token",
            retryable=False,
            request_id=request_id,
        )
        return mismatch, None
    log.info("token refreshed")
    expires_at = frames.expiry_ms(renewed.expires_at)
    return frames.ack_frame("refresh", request_id, token_expires_at=expires_at), renewed


def generate_stream(
    generator: Generator, principal: Principal, frame: dict[str, Any], request_id: str | None
) -> StreamOpener:
    """How a `generate` opens its run's stream: it starts the run (by outline, or by `plan`:
    the generator reads the outline from the planner with this user's token); once the run
    has an id, a broken stream re-attaches to it instead of starting another."""
    plan: dict[str, Any] | None = frame.get("plan")
    outline = frames.outline_from_frame(frame["outline"]) if plan is None else None
    # 0 (absent): a chunk per LLM delta; n: at most one chunk per n ms per section.
    chunk_interval_ms = int((frame.get("options") or {}).get("chunk_interval_ms", 0))
    extra = {"chunk_interval_ms": chunk_interval_ms} if chunk_interval_ms else {}

    def open_stream(run_id: str | None, after_seq: int) -> AsyncGenerator[RunInfo | RunEvent, None]:
        if run_id is not None:
            return generator.follow(run_id, user_id=principal.user_id, after_seq=after_seq)
        if plan is not None:
            return generator.start_plan(
                plan["document_id"],
                user_id=principal.user_id,
                request_id=request_id or "",
                token=principal.token,
                **extra,
            )
        assert outline is not None
        return generator.start(
            outline, user_id=principal.user_id, request_id=request_id or "", **extra
        )

    return open_stream
