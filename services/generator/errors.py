"""Every error a generator RPC answers with, and the one table from each to its gRPC status.

Exceptions (`str(error)` is safe to show to the caller; the gRPC status is in brackets):

    GeneratorError          [INTERNAL]            base
    ├── InvalidRequest      [INVALID_ARGUMENT]    a required field is missing
    │   └── InvalidOutline  [INVALID_ARGUMENT]    the outline cannot be written (every problem)
    ├── RunNotFound         [NOT_FOUND]           unknown, expired, or another user's run
    ├── RunLost             [NOT_FOUND]           the run vanished from the shared store
    ├── CursorOutOfRange    [OUT_OF_RANGE]        `after_seq` is past the run's last event
    ├── TooManyRuns         [RESOURCE_EXHAUSTED]  the user's or this generator's run limit
    ├── RunLogUnavailable   [UNAVAILABLE]         the shared run store is unreachable (retry)
    ├── RunNotEnded         [FAILED_PRECONDITION] `GetDocument` of a run still being written
    ├── EventStreamNotFound [FAILED_PRECONDITION] `event_stream_id` names no open event stream
    ├── EventStreamClosed   [UNAVAILABLE]         the event stream a call pushed into ended
    └── PlanError                                 `StartRun{plan}`: the planner's answer
        ├── PlanNotFound          [NOT_FOUND]           404/410 (docs/planner.md)
        ├── PlanForbidden         [PERMISSION_DENIED]   401/403: the token may not read it
        ├── PlannerUnavailable    [UNAVAILABLE]         429/5xx/refused/slow (retry)
        ├── PlannerNotConfigured  [FAILED_PRECONDITION] no `DOCGEN_PLANNER_URL`
        └── PlanInvalid           [INVALID_ARGUMENT]    the body is not an outline

A `PlanError`'s `code` (the protocol's error code) travels in the `docgen-error-code`
trailing metadata, a `RunNotEnded`'s status in `docgen-run-status` (`plans.error_trailers`).

Errors inside a run (the LLM's, the summary's) are not here: they become the run's `error`
events (`section_writer.py`, `execution.py`). The edge reads these statuses back into protocol
error codes in one place, `services/edge/generator_client.py`.

Plain Python on purpose: the run log and the registry raise these without importing grpc;
`GRPC_STATUS` names `grpc.StatusCode` members and `server.py` is the only reader.
"""

from __future__ import annotations


class GeneratorError(Exception):
    """Base of the errors a generator RPC answers with."""


class InvalidRequest(GeneratorError):
    """The request misses a required field or holds an unusable value."""


class InvalidOutline(InvalidRequest):
    """The outline cannot be written; the message lists every problem."""


class RunNotFound(GeneratorError):
    """Unknown, expired, or another user's run: deliberately indistinguishable."""


class RunLost(GeneratorError):
    """The run's log vanished from the shared store while it was followed (it expired, or the
    store restarted without its data)."""


class CursorOutOfRange(GeneratorError):
    """The caller asked for events after a `seq` the log has not reached."""

    def __init__(self, *, after_seq: int, last_seq: int) -> None:
        super().__init__(f"after_seq={after_seq} is past the last event (seq={last_seq})")
        self.after_seq = after_seq
        self.last_seq = last_seq


class TooManyRuns(GeneratorError):
    """The user (or this generator) already has the maximum number of unfinished runs."""


class RunLogUnavailable(GeneratorError):
    """The shared store of run logs could not be reached in time (retryable)."""


class RunNotEnded(GeneratorError):
    """`GetDocument` of a run still being written: its document does not exist yet."""

    status = "running"


EVENT_STREAM_NOT_FOUND = "event_stream_not_found"
"""Only ever a gRPC trailer for the edge, never a protocol error code sent to a client."""


class EventStreamNotFound(GeneratorError):
    """`event_stream_id` names no open event stream of this generator (its `code` travels in
    the `docgen-error-code` trailer: the caller opens one, or goes without)."""

    code = EVENT_STREAM_NOT_FOUND


class EventStreamClosed(GeneratorError):
    """The event stream a call pushed its run's events into has ended: the caller re-attaches."""


class PlanError(GeneratorError):
    """The planner could not give the outline of a `StartRun{plan}`; each subclass has the
    protocol's error `code`."""

    retryable = False


class PlanNotFound(PlanError):
    code = "plan_not_found"


class PlanForbidden(PlanError):
    code = "plan_forbidden"


class PlannerUnavailable(PlanError):
    code = "planner_unavailable"
    retryable = True


class PlannerNotConfigured(PlanError):
    code = "planner_not_configured"


class PlanInvalid(PlanError):
    code = "invalid_outline"


GRPC_STATUS: dict[type[GeneratorError], str] = {
    GeneratorError: "INTERNAL",
    InvalidRequest: "INVALID_ARGUMENT",
    RunNotFound: "NOT_FOUND",
    RunLost: "NOT_FOUND",
    CursorOutOfRange: "OUT_OF_RANGE",
    TooManyRuns: "RESOURCE_EXHAUSTED",
    RunLogUnavailable: "UNAVAILABLE",
    RunNotEnded: "FAILED_PRECONDITION",
    EventStreamNotFound: "FAILED_PRECONDITION",
    EventStreamClosed: "UNAVAILABLE",
    PlanNotFound: "NOT_FOUND",
    PlanForbidden: "PERMISSION_DENIED",
    PlannerUnavailable: "UNAVAILABLE",
    PlannerNotConfigured: "FAILED_PRECONDITION",
    PlanInvalid: "INVALID_ARGUMENT",
}
"""The name of the `grpc.StatusCode` each error is answered with; a subclass without an entry
answers with its nearest base's."""


def grpc_status_name(error: GeneratorError) -> str:
    """The name of the gRPC status `error` is answered with."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return GRPC_STATUS[GeneratorError]
