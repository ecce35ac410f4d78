"""The generator's errors: each has one gRPC status (`errors.GRPC_STATUS`), and the edge reads
each status back as the protocol error code the client is documented to get."""

from __future__ import annotations

import grpc
import pytest

from services.edge.generator_client import error_from_status
from services.generator import errors
from services.generator.errors import GeneratorError, grpc_status_name
from services.generator.plans import error_trailers

ALL_ERRORS = [
    value
    for value in vars(errors).values()
    if isinstance(value, type) and issubclass(value, GeneratorError)
]

# What a client sees for each (docs/protocol.md, "Errors").
PROTOCOL_CODE = {
    errors.GeneratorError: ("internal", True),
    errors.InvalidRequest: ("invalid_outline", False),
    errors.InvalidOutline: ("invalid_outline", False),
    errors.RunNotFound: ("run_not_found", False),
    errors.RunLost: ("run_not_found", False),
    errors.CursorOutOfRange: ("cursor_out_of_range", False),
    errors.TooManyRuns: ("too_many_runs", True),
    errors.RunLogUnavailable: ("generator_unavailable", True),
    errors.RunNotEnded: ("run_not_ended", True),
    errors.PlanError: ("internal", True),
    errors.PlanNotFound: ("plan_not_found", False),
    errors.PlanForbidden: ("plan_forbidden", False),
    errors.PlannerUnavailable: ("planner_unavailable", True),
    errors.PlannerNotConfigured: ("planner_not_configured", False),
    errors.PlanInvalid: ("invalid_outline", False),
    # The edge's own plumbing (OpenEventStream): it repeats the call without the stream on
    # the first and re-attaches on the second, so a client never sees the first's code.
    errors.EventStreamNotFound: ("internal", True),
    errors.EventStreamClosed: ("generator_unavailable", True),
}


def make(cls: type[GeneratorError]) -> GeneratorError:
    if cls is errors.CursorOutOfRange:
        return errors.CursorOutOfRange(after_seq=9, last_seq=3)
    return cls("what went wrong")


def test_every_error_is_in_this_test() -> None:
    assert set(ALL_ERRORS) == set(PROTOCOL_CODE)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_each_error_has_a_grpc_status_the_edge_reads_back(cls: type[GeneratorError]) -> None:
    error = make(cls)
    status = grpc.StatusCode[grpc_status_name(error)]
    trailers = grpc.aio.Metadata(*error_trailers(error))
    wire = grpc.aio.AioRpcError(status, grpc.aio.Metadata(), trailers, details=str(error))
    translated = error_from_status(wire)
    assert (translated.code, translated.retryable) == PROTOCOL_CODE[cls]


def test_a_subclass_without_an_entry_answers_with_its_base_status() -> None:
    class Unlisted(errors.RunNotFound):
        pass

    assert grpc_status_name(Unlisted("gone")) == "NOT_FOUND"
