"""Where a run's outline comes from, and what an ended run's log makes: the outline of a
`StartRun` (inline, or fetched from the planner with the caller's token found in the call's
metadata), and the finished document of `GetDocument`. No grpc: metadata is plain pairs."""

from __future__ import annotations

from collections.abc import Sequence

from docgen.v1 import document_pb2, events_pb2, generator_pb2, outline_pb2

from services.common.document import document_from_events
from services.generator.errors import GeneratorError, InvalidRequest, RunNotEnded
from services.generator.planner import PlannerClient
from services.generator.runs.log import RunReader

AUTHORIZATION_METADATA = "authorization"
ERROR_CODE_METADATA = "docgen-error-code"
RUN_STATUS_METADATA = "docgen-run-status"
MAX_DOCUMENT_ID_CHARS = 128


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The caller's token from `authorization: Bearer <JWT>` metadata (None: none sent)."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_METADATA and isinstance(value, str):
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return None


async def outline_of(
    request: generator_pb2.StartRunRequest,
    *,
    planner: PlannerClient,
    metadata: Sequence[tuple[str, str | bytes]] | None,
) -> tuple[outline_pb2.Outline, events_pb2.PlanSource.ValueType]:
    """The outline to write and where it came from; raises `InvalidRequest` or a planner
    error (`services/generator/planner.py`), both `GeneratorError`s."""
    if request.WhichOneof("source") != "plan":
        return request.outline, events_pb2.PLAN_SOURCE_INLINE
    document_id = request.plan.document_id
    if not document_id or len(document_id) > MAX_DOCUMENT_ID_CHARS:
        raise InvalidRequest(f"plan.document_id must be 1..{MAX_DOCUMENT_ID_CHARS} characters")
    outline = await planner.fetch_outline(document_id, token=bearer_token(metadata))
    return outline, events_pb2.PLAN_SOURCE_PLANNER


async def document_of(log: RunReader, *, ended: bool) -> document_pb2.Document:
    """The finished document of a run whose log is `log`; `RunNotEnded` while it is written
    (checked first: following a running log would wait for its end)."""
    if not ended:
        raise RunNotEnded(
            "the run is still being written: attach to it until RunEnd, then ask again"
        )
    return document_from_events([event async for event in log.follow(0)])


def error_trailers(error: GeneratorError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that tells errors of one gRPC status apart (a plan's NOT_FOUND from a
    run's) and carries a running run's status; the edge reads them back."""
    if isinstance(error, RunNotEnded):
        return ((RUN_STATUS_METADATA, error.status),)
    code = getattr(error, "code", None)
    return ((ERROR_CODE_METADATA, code),) if isinstance(code, str) else ()
