"""Which delivery failures the outbox retries for ever and which it counts towards a dead
letter."""

from __future__ import annotations

import grpc
import pytest
from temporalio.service import RPCError, RPCStatusCode

from oms_platform import outbox
from oms_platform.dead_letters import attached_to, parse_attached_to


def rpc(status: RPCStatusCode, message: str = "no") -> RPCError:
    return RPCError(message, status, b"")


@pytest.mark.parametrize(
    "error",
    [
        rpc(RPCStatusCode.UNAVAILABLE),
        rpc(RPCStatusCode.DEADLINE_EXCEEDED),
        rpc(RPCStatusCode.RESOURCE_EXHAUSTED, "namespace rate limit exceeded"),
        rpc(RPCStatusCode.NOT_FOUND, "namespace default is not found"),
        rpc(RPCStatusCode.PERMISSION_DENIED),
        ConnectionResetError(),
        TimeoutError(),
        RuntimeError("client not connected"),
    ],
)
def test_outages_and_deployment_problems_are_transient(error: BaseException) -> None:
    assert outbox.classify(error) == outbox.TRANSIENT


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            rpc(RPCStatusCode.INVALID_ARGUMENT, "no mapping for search attribute"),
            "invalid_argument",
        ),
        (rpc(RPCStatusCode.FAILED_PRECONDITION), "failed_precondition"),
        (rpc(RPCStatusCode.INVALID_ARGUMENT, "Blob data size exceeds limit."), "payload_too_large"),
        (
            rpc(RPCStatusCode.RESOURCE_EXHAUSTED, "Sent message larger than max (5 vs. 4)"),
            "payload_too_large",
        ),
        (TypeError("Object of type set is not JSON serializable"), "encode_error"),
        (KeyError("channel"), "encode_error"),
        (LookupError("nobody saw this coming"), "unexpected"),
    ],
)
def test_refusals_are_told_apart_by_kind(error: BaseException, kind: str) -> None:
    assert outbox.classify(error) == kind


def test_a_delivery_failure_names_its_dead_letter_and_nothing_else_parses_as_one() -> None:
    assert parse_attached_to(attached_to("fulfillment", 42)) == ("fulfillment", 42)
    for other in ("step:authorize", "dead_letter:capture:", "dead_letter::7", "x:capture:7"):
        assert parse_attached_to(other) is None


def capture_said(code: grpc.StatusCode, details: str = "no") -> grpc.aio.AioRpcError:
    """Capture's answer to an event delivery (RecordOrderEvents)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", outbox.TRANSIENT),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", outbox.TRANSIENT),
        (grpc.StatusCode.UNAUTHENTICATED, "token expired", outbox.TRANSIENT),
        (grpc.StatusCode.PERMISSION_DENIED, "role service may not call", outbox.TRANSIENT),
        (grpc.StatusCode.INTERNAL, "unexpected error (id e-1)", outbox.TRANSIENT),
        (grpc.StatusCode.NOT_FOUND, "order 'o-1' not found", outbox.NOT_FOUND),
        (grpc.StatusCode.INVALID_ARGUMENT, "events[0].type: is required", outbox.INVALID_ARGUMENT),
        (grpc.StatusCode.FAILED_PRECONDITION, "no", outbox.FAILED_PRECONDITION),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Sent message larger than max (5 vs. 4)",
            outbox.PAYLOAD_TOO_LARGE,
        ),
    ],
)
def test_captures_answers_to_event_rows_are_classified_like_temporals(
    code: grpc.StatusCode, details: str, kind: str
) -> None:
    assert outbox.classify(capture_said(code, details)) == kind
