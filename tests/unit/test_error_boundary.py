"""The error boundary's mapping: every kind of failure to the code a caller can act on, with
messages clipped so no echoed input overflows a reply's metadata."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from temporalio.service import RPCError, RPCStatusCode

from oms_platform import grpcutil
from oms_platform.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    check_required,
)


def code_of(error: BaseException) -> grpc.StatusCode:
    return grpcutil.refusal_for(error).code


def test_database_errors_map_to_what_the_caller_can_do() -> None:
    assert code_of(asyncpg.exceptions.CharacterNotInRepertoireError("x")) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code_of(asyncpg.exceptions.NumericValueOutOfRangeError("x")) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # asyncpg's own check of an argument (e.g. an int past bigint) before it reaches the server
    assert code_of(asyncpg.exceptions._base.DataError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    for away in (
        asyncpg.exceptions.AdminShutdownError("x"),
        asyncpg.exceptions.CannotConnectNowError("x"),
        asyncpg.exceptions.TooManyConnectionsError("x"),
        asyncpg.exceptions.ConnectionDoesNotExistError("x"),
        ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)"),
        TimeoutError(),
    ):
        assert code_of(away) == grpc.StatusCode.UNAVAILABLE, away
    assert code_of(asyncpg.exceptions.SerializationError("x")) == grpc.StatusCode.ABORTED
    assert code_of(asyncpg.exceptions.DeadlockDetectedError("x")) == grpc.StatusCode.ABORTED


def test_messages_never_carry_the_error_text() -> None:
    refused = grpcutil.refusal_for(
        asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for "UTF8": 0x00')
    )
    assert "0x00" not in refused.message and "UTF8" not in refused.message
    assert "character" in refused.message
    away = grpcutil.refusal_for(ConnectionRefusedError(111, "('10.0.0.7', 5432)"))
    assert "10.0.0.7" not in away.message and "5432" not in away.message


def test_temporal_and_downstream_outages_are_unavailable_and_bugs_internal() -> None:
    assert code_of(RPCError("down", RPCStatusCode.UNAVAILABLE, b"")) == grpc.StatusCode.UNAVAILABLE
    bug = grpcutil.refusal_for(ValueError("year 0 is out of range"))
    assert bug.code == grpc.StatusCode.INTERNAL
    assert bug.error_id and bug.error_id in bug.message
    assert "year" not in bug.message and "ValueError" not in bug.message
    assert grpcutil.refusal_for(ValueError()).error_id != bug.error_id
    assert code_of(RPCError("bad", RPCStatusCode.INVALID_ARGUMENT, b"")) == (
        grpc.StatusCode.INTERNAL
    )


def test_domain_errors_keep_their_codes() -> None:
    assert code_of(NotFound("order o-1 not found")) == grpc.StatusCode.NOT_FOUND
    assert code_of(Unavailable("capture did not answer")) == grpc.StatusCode.UNAVAILABLE


def test_echoed_input_is_clipped_to_fit_a_reply() -> None:
    huge = "x" * 100_000
    refused = grpcutil.refusal_for(NotFound(f"order {huge} not found"))
    assert len(refused.message) == grpcutil.MAX_MESSAGE_CHARS
    assert refused.message.endswith("more characters)")
    many = InvalidArgument([FieldViolation(f"lines[{i}].sku", f"bad {huge}") for i in range(2000)])
    code, status = grpcutil.status_for(many)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(status.SerializeToString()) <= grpcutil.MAX_DETAILS_BYTES + 1024
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "lines[0].sku"
    assert "more violations" in bad.field_violations[-1].description
    # Short violations in four-byte characters still fill the details: the byte cap cuts them.
    parcel = "\U0001f4e6" * 200  # four bytes each in UTF-8
    wide = InvalidArgument([FieldViolation(parcel, parcel) for _ in range(30)])
    assert grpcutil.status_for(wide)[1].details[0].Unpack(bad)
    assert bad.ByteSize() <= grpcutil.MAX_DETAILS_BYTES + 64
    assert bad.field_violations[-1].description.endswith("more violations not shown")


def test_a_change_to_an_erased_order_is_a_failed_precondition() -> None:
    from oms_platform.codec import Shredded

    refused = grpcutil.refusal_for(Shredded("order:o-1"))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "erased" in refused.message


def test_check_required_names_every_empty_field_and_passes_a_full_request() -> None:
    check_required({"order_id": "o-1", "idempotency_key": "k"})
    with pytest.raises(InvalidArgument) as raised:
        check_required({"order_id": "", "idempotency_key": "k", "shipment_id": ""})
    assert raised.value.violations == [
        FieldViolation("order_id", "is required"),
        FieldViolation("shipment_id", "is required"),
    ]
