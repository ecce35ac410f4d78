"""`GET /v1/runs/{run_id}/document`: the finished document of one of the caller's runs, as
Markdown (the default) or JSON (`?format=json`). The token travels as on the socket's
non-browser path, `Authorization: Bearer <JWT>`; the same user only (docs/protocol.md,
"The finished document")."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.common.document import document_to_json
from services.common.logs import bind_log_context, hash_user
from services.edge.auth import AuthError, TokenVerifier, refuse_token_in_query
from services.edge.generator_client import (
    GeneratorClient,
    GeneratorError,
    RunNotEnded,
    RunNotFound,
)
from services.edge.generator_pool import GeneratorPool

log = logging.getLogger(__name__)

FORMATS = ("markdown", "json")
MAX_RUN_ID_CHARS = 128
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    http_status: int, code: str, message: str, extra: dict[str, str] | None = None
) -> web.Response:
    response = web.json_response(
        {"error": {"code": code, "message": message, **(extra or {})}}, status=http_status
    )
    # A document is private to its user: no shared cache may keep it, or a refusal of it.
    response.headers["Cache-Control"] = "no-store"
    return response


def bearer_token(request: web.Request) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthError(401, "missing_token", "send the token as 'Authorization: Bearer <JWT>'")
    return credentials.strip()


def document_handler(
    verifier: web.AppKey[TokenVerifier], generator: web.AppKey[GeneratorClient | GeneratorPool]
) -> Handler:
    """The route's handler, reading the app's verifier and generator client by these keys."""

    async def handle(request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        fmt = request.query.get("format", "markdown")
        try:
            refuse_token_in_query(request.query.items())
            principal = await request.app[verifier].verify(bearer_token(request))
        except AuthError as error:
            response = error_response(error.status, error.code, error.message)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="docgen"'
            return response
        if fmt not in FORMATS:
            return error_response(
                400, "invalid_format", f"format must be one of {', '.join(FORMATS)}"
            )
        with bind_log_context(run_id=run_id[:MAX_RUN_ID_CHARS], user=hash_user(principal.user_id)):
            if len(run_id) > MAX_RUN_ID_CHARS:
                return not_found()
            try:
                document = await request.app[generator].get_document(
                    run_id, user_id=principal.user_id
                )
            except RunNotFound:
                return not_found()
            except RunNotEnded as error:
                return error_response(
                    409,
                    error.code,
                    "the run is still being written: follow it (resume) or ask again when "
                    "it has ended",
                    {"status": error.status},
                )
            except GeneratorError as error:
                return error_response(503 if error.retryable else 500, error.code, error.message)
            log.info("document served", extra={"format": fmt, "sections": len(document.sections)})
        if fmt == "json":
            response = web.json_response(document_to_json(document))
        else:
            response = web.Response(
                text=document.markdown, content_type="text/markdown", charset="utf-8"
            )
        response.headers["Cache-Control"] = "no-store"
        return response

    return handle


def not_found() -> web.Response:
    # Deliberately the same words for unknown, expired and foreign runs.
    return error_response(404, "run_not_found", "no such run: unknown, expired, or not yours")
