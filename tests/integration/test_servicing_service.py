"""The servicing service over real gRPC and Postgres: recording and listing process exceptions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform.grpcutil import field_violations
from oms_platform.service import start_service
from oms_platform.settings import Settings

if TYPE_CHECKING:
    from oms.servicing.v1.servicing_pb2_grpc import ServicingServiceAsyncStub as Stub


@pytest.fixture(scope="module")
async def servicing(settings: Settings) -> AsyncIterator[Stub]:
    running = await start_service("servicing", settings, port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield servicing_pb2_grpc.ServicingServiceStub(channel)
    finally:
        await channel.close()
        await running.stop(0.5)


def an_order() -> str:
    return f"order-{uuid.uuid4()}"


def a_record(order_id: str, **changes: object) -> pb.RecordProcessExceptionRequest:
    request = pb.RecordProcessExceptionRequest(
        idempotency_key=f"step-{uuid.uuid4()}",
        order_id=order_id,
        category=pb.PROCESS_EXCEPTION_CATEGORY_PAYMENT,
        severity=pb.PROCESS_EXCEPTION_SEVERITY_HIGH,
        attached_to="authorization:auth-1",
        message="authorization declined by the gateway",
    )
    for name, value in changes.items():
        setattr(request, name, value)
    return request


async def listed(stub: Stub, **filters: object) -> list[pb.ProcessException]:
    response = await stub.ListProcessExceptions(pb.ListProcessExceptionsRequest(**filters))
    return list(response.process_exceptions)


async def test_a_recorded_exception_is_listed_as_new(servicing: Stub) -> None:
    order_id = an_order()

    recorded = await servicing.RecordProcessException(a_record(order_id))
    found = await listed(servicing, order_id=order_id)

    assert [e.process_exception_id for e in found] == [
        recorded.process_exception.process_exception_id
    ]
    exception = found[0]
    assert exception.status == pb.PROCESS_EXCEPTION_STATUS_NEW
    assert exception.category == pb.PROCESS_EXCEPTION_CATEGORY_PAYMENT
    assert exception.severity == pb.PROCESS_EXCEPTION_SEVERITY_HIGH
    assert exception.attached_to == "authorization:auth-1"
    assert exception.message == "authorization declined by the gateway"
    assert exception.created_at.seconds > 0
    assert exception.updated_at == exception.created_at


async def test_recording_again_with_the_same_key_returns_the_same_exception(
    servicing: Stub,
) -> None:
    order_id = an_order()
    request = a_record(order_id)

    first = await servicing.RecordProcessException(request)
    again = await servicing.RecordProcessException(request)

    assert again.process_exception == first.process_exception
    assert len(await listed(servicing, order_id=order_id)) == 1


async def test_the_same_key_with_a_different_message_is_already_exists(servicing: Stub) -> None:
    order_id = an_order()
    request = a_record(order_id)
    await servicing.RecordProcessException(request)
    changed = a_record(order_id, idempotency_key=request.idempotency_key, message="other")

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await servicing.RecordProcessException(changed)

    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert request.idempotency_key in (error.value.details() or "")
    assert len(await listed(servicing, order_id=order_id)) == 1


async def test_the_same_key_on_another_order_is_another_exception(servicing: Stub) -> None:
    key = f"step-{uuid.uuid4()}"

    one = await servicing.RecordProcessException(a_record(an_order(), idempotency_key=key))
    two = await servicing.RecordProcessException(a_record(an_order(), idempotency_key=key))

    assert one.process_exception.process_exception_id != two.process_exception.process_exception_id


async def test_listing_filters_by_order_status_and_category(servicing: Stub) -> None:
    order_id, other_order = an_order(), an_order()
    carrier = await servicing.RecordProcessException(
        a_record(order_id, category=pb.PROCESS_EXCEPTION_CATEGORY_CARRIER)
    )
    fraud = await servicing.RecordProcessException(
        a_record(order_id, category=pb.PROCESS_EXCEPTION_CATEGORY_FRAUD)
    )
    await servicing.RecordProcessException(
        a_record(other_order, category=pb.PROCESS_EXCEPTION_CATEGORY_CARRIER)
    )
    carrier_id = carrier.process_exception.process_exception_id
    fraud_id = fraud.process_exception.process_exception_id

    by_order = await listed(servicing, order_id=order_id)
    by_category = await listed(
        servicing, order_id=order_id, categories=[pb.PROCESS_EXCEPTION_CATEGORY_CARRIER]
    )
    by_two_categories = await listed(
        servicing,
        order_id=order_id,
        categories=[pb.PROCESS_EXCEPTION_CATEGORY_CARRIER, pb.PROCESS_EXCEPTION_CATEGORY_FRAUD],
    )
    new_ones = await listed(
        servicing, order_id=order_id, statuses=[pb.PROCESS_EXCEPTION_STATUS_NEW]
    )
    resolved = await listed(
        servicing, order_id=order_id, statuses=[pb.PROCESS_EXCEPTION_STATUS_RESOLVED]
    )
    carrier_everywhere = await listed(
        servicing, categories=[pb.PROCESS_EXCEPTION_CATEGORY_CARRIER], page_size=1000
    )

    assert [e.process_exception_id for e in by_order] == [fraud_id, carrier_id]  # newest first
    assert [e.process_exception_id for e in by_category] == [carrier_id]
    assert [e.process_exception_id for e in by_two_categories] == [fraud_id, carrier_id]
    assert [e.process_exception_id for e in new_ones] == [fraud_id, carrier_id]
    assert resolved == []
    assert {e.order_id for e in carrier_everywhere} >= {order_id, other_order}
    assert {e.category for e in carrier_everywhere} == {pb.PROCESS_EXCEPTION_CATEGORY_CARRIER}


async def test_paging_visits_every_exception_once_newest_first(servicing: Stub) -> None:
    order_id = an_order()
    recorded = [
        (
            await servicing.RecordProcessException(a_record(order_id, message=f"failure {i}"))
        ).process_exception.process_exception_id
        for i in range(7)
    ]

    pages: list[list[str]] = []
    token = ""
    while True:
        response = await servicing.ListProcessExceptions(
            pb.ListProcessExceptionsRequest(order_id=order_id, page_size=3, page_token=token)
        )
        pages.append([e.process_exception_id for e in response.process_exceptions])
        token = response.next_page_token
        if not token:
            break

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [pid for page in pages for pid in page] == list(reversed(recorded))


async def test_a_bad_record_request_names_every_bad_field(servicing: Stub) -> None:
    request = pb.RecordProcessExceptionRequest(attached_to="x" * 300)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await servicing.RecordProcessException(request)

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(error.value)] == [
        "order_id",
        "idempotency_key",
        "category",
        "severity",
        "message",
        "attached_to",
    ]


async def test_a_bad_page_token_is_invalid_argument_naming_page_token(servicing: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await servicing.ListProcessExceptions(
            pb.ListProcessExceptionsRequest(page_token="not-a-token")
        )

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(error.value)] == ["page_token"]


async def test_a_page_token_from_another_listing_is_refused(servicing: Stub) -> None:
    order_id = an_order()
    for _ in range(2):
        await servicing.RecordProcessException(a_record(order_id))
    first = await servicing.ListProcessExceptions(
        pb.ListProcessExceptionsRequest(order_id=order_id, page_size=1)
    )

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await servicing.ListProcessExceptions(
            pb.ListProcessExceptionsRequest(
                order_id=an_order(), page_size=1, page_token=first.next_page_token
            )
        )

    assert first.next_page_token
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(error.value)] == ["page_token"]
