"""The errors of calls to the generator (`generator_client.py` raises them): every failure is
one `GeneratorError` whose code, message and retryability are the protocol's error frame.

    GeneratorError                 a call to the generator failed; `.code` is the frame's code
    ├── GeneratorUnavailable       unreachable or too slow: re-attaching may work (retryable)
    ├── InvalidOutline             the generator refused the outline
    ├── RunNotFound                unknown, expired, or another user's run
    ├── CursorOutOfRange           `after_seq` is past the run's last event
    ├── TooManyRuns                this user's (or this generator's) run limit (retryable)
    ├── PlanNotFound               the planner has no such document (docs/planner.md)
    ├── PlanForbidden              the planner refused this user's token
    ├── PlannerUnavailable         the planner is down, slow or overloaded (retryable)
    ├── PlannerNotConfigured       the generator has no planner
    ├── RunNotEnded                the run's document is still being written (`.status`)
    └── GeneratorInternal          any other status: a bug or a surprise (retryable)

`error_from_status` is the one translation from gRPC status to these; the planner's errors
travel as their protocol code in the `docgen-error-code` trailing metadata.
"""

from __future__ import annotations

import grpc


class GeneratorError(Exception):
    """A call to the generator failed. `code`, `message` and `retryable` are what the client
    is told in its error frame (docs/protocol.md)."""

    code = "internal"
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GeneratorUnavailable(GeneratorError):
    """The generator is unreachable or did not answer in time: a follower re-attaches."""

    code = "generator_unavailable"
    retryable = True


class InvalidOutline(GeneratorError):
    code = "invalid_outline"
    retryable = False


class RunNotFound(GeneratorError):
    code = "run_not_found"
    retryable = False


class CursorOutOfRange(GeneratorError):
    code = "cursor_out_of_range"
    retryable = False


class TooManyRuns(GeneratorError):
    code = "too_many_runs"
    retryable = True


class GeneratorInternal(GeneratorError):
    code = "internal"
    retryable = True


class PlanNotFound(GeneratorError):
    code = "plan_not_found"
    retryable = False


class PlanForbidden(GeneratorError):
    code = "plan_forbidden"
    retryable = False


class PlannerUnavailable(GeneratorError):
    code = "planner_unavailable"
    retryable = True


class PlannerNotConfigured(GeneratorError):
    code = "planner_not_configured"
    retryable = False


# The code of an HTTP answer (`GET /v1/runs/{run_id}/document`, 409), never of a frame.
RUN_NOT_ENDED = "run_not_ended"


class RunNotEnded(GeneratorError):
    """Only `get_document` raises it: the run's document is still being written."""

    code = RUN_NOT_ENDED
    retryable = True

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


# Set by the generator on errors whose gRPC status alone is ambiguous (NOT_FOUND: plan or run).
ERROR_CODE_METADATA = "docgen-error-code"
RUN_STATUS_METADATA = "docgen-run-status"
_PLANNER_ERRORS: dict[str, type[GeneratorError]] = {
    cls.code: cls for cls in (PlanNotFound, PlanForbidden, PlannerUnavailable, PlannerNotConfigured)
}


def trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for name, value in error.trailing_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def error_from_status(error: grpc.aio.AioRpcError) -> GeneratorError:
    """The protocol error of a failed gRPC call."""
    status = error.code()
    details = error.details() or status.name
    planner_error = _PLANNER_ERRORS.get(trailer(error, ERROR_CODE_METADATA) or "")
    if planner_error is not None:
        return planner_error(details)
    if status == grpc.StatusCode.FAILED_PRECONDITION and trailer(error, RUN_STATUS_METADATA):
        run_status = trailer(error, RUN_STATUS_METADATA) or "running"
        return RunNotEnded(details, status=run_status)
    if status == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidOutline(details)
    if status == grpc.StatusCode.NOT_FOUND:
        # Deliberately the same words for unknown, expired and foreign runs.
        return RunNotFound("no such run: unknown, expired, or not yours")
    if status == grpc.StatusCode.OUT_OF_RANGE:
        return CursorOutOfRange(details)
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return TooManyRuns(details)
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return GeneratorUnavailable("the document generator is unreachable; retry shortly")
    return GeneratorInternal(f"internal error ({status.name}); retry shortly")
