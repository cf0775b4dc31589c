"""The servicing service over real gRPC and Postgres: recording and listing process exceptions."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc
import pytest
from oms.servicing.v1 import servicing_pb2 as pb
from oms.servicing.v1 import servicing_pb2_grpc

from oms_platform import auth
from oms_platform.grpcutil import field_violations
from oms_platform.settings import Settings
from oms_tools.registry import start_service
from tests.callers import persona_channel

if TYPE_CHECKING:
    from oms.servicing.v1.servicing_pb2_grpc import ServicingServiceAsyncStub as Stub


@pytest.fixture(scope="module")
async def servicing(settings: Settings) -> AsyncIterator[Stub]:
    running = await start_service("servicing", settings, port=0)
    channel = persona_channel(settings, f"127.0.0.1:{running.port}", {auth.AGENT: "agent:ada"})
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


async def test_an_exception_keeps_the_input_of_the_step_that_failed(servicing: Stub) -> None:
    order_id = an_order()
    step_input = json.dumps({"idempotency_key": f"{order_id}:invoice:s1", "shipping_minor": 500})

    await servicing.RecordProcessException(a_record(order_id, step_input=step_input))
    [found] = await listed(servicing, order_id=order_id)

    assert json.loads(found.step_input) == json.loads(step_input)


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
    request = pb.RecordProcessExceptionRequest(attached_to="x" * 300, step_input="{" * 17000)

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
        "step_input",
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


# ---- an agent's bookkeeping: status, escalation, lookup -------------------------------------


async def recorded(stub: Stub, **changes: object) -> pb.ProcessException:
    response = await stub.RecordProcessException(a_record(an_order(), **changes))
    return response.process_exception


async def test_an_agent_triages_then_voids_an_exception_and_it_stays_voided(
    servicing: Stub,
) -> None:
    exception = await recorded(servicing)
    exception_id = exception.process_exception_id

    triaged = await servicing.UpdateProcessExceptionStatus(
        pb.UpdateProcessExceptionStatusRequest(
            process_exception_id=exception_id,
            status=pb.PROCESS_EXCEPTION_STATUS_TRIAGED,
            note="looking into it",
        )
    )
    voided = await servicing.UpdateProcessExceptionStatus(
        pb.UpdateProcessExceptionStatusRequest(
            process_exception_id=exception_id, status=pb.PROCESS_EXCEPTION_STATUS_VOIDED
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as reopened:
        await servicing.UpdateProcessExceptionStatus(
            pb.UpdateProcessExceptionStatusRequest(
                process_exception_id=exception_id, status=pb.PROCESS_EXCEPTION_STATUS_TRIAGED
            )
        )
    fetched = await servicing.GetProcessException(
        pb.GetProcessExceptionRequest(process_exception_id=exception_id)
    )

    assert triaged.process_exception.status == pb.PROCESS_EXCEPTION_STATUS_TRIAGED
    assert (triaged.process_exception.note, triaged.process_exception.updated_by) == (
        "looking into it",
        "agent:ada",
    )
    assert voided.process_exception.status == pb.PROCESS_EXCEPTION_STATUS_VOIDED
    assert voided.process_exception.updated_by == "agent:ada"  # the caller, always
    assert reopened.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert fetched.process_exception == voided.process_exception


async def test_resolved_cannot_be_set_by_hand_and_unknown_exceptions_are_not_found(
    servicing: Stub,
) -> None:
    exception = await recorded(servicing)

    with pytest.raises(grpc.aio.AioRpcError) as by_hand:
        await servicing.UpdateProcessExceptionStatus(
            pb.UpdateProcessExceptionStatusRequest(
                process_exception_id=exception.process_exception_id,
                status=pb.PROCESS_EXCEPTION_STATUS_RESOLVED,
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await servicing.ResolveProcessException(
            pb.ResolveProcessExceptionRequest(
                process_exception_id="pe-unknown", action=pb.RESOLUTION_ACTION_SKIP
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as no_action:
        await servicing.ResolveProcessException(
            pb.ResolveProcessExceptionRequest(process_exception_id="", note="n" * 2001)
        )

    assert by_hand.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(by_hand.value)] == ["status"]
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert no_action.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(no_action.value)] == [
        "process_exception_id",
        "action",
        "note",
    ]


async def test_an_escalation_raises_severity_once_per_key_and_says_why(servicing: Stub) -> None:
    exception = await recorded(servicing, severity=pb.PROCESS_EXCEPTION_SEVERITY_MEDIUM)
    request = pb.EscalateProcessExceptionRequest(
        process_exception_id=exception.process_exception_id,
        idempotency_key="order-1:escalate",
        message="unresolved for 4:00:00",
    )

    first = await servicing.EscalateProcessException(request)
    again = await servicing.EscalateProcessException(request)
    later = await servicing.EscalateProcessException(
        pb.EscalateProcessExceptionRequest(
            process_exception_id=exception.process_exception_id,
            idempotency_key="order-1:escalate:2",
            message="unresolved for 8:00:00",
        )
    )

    assert first.process_exception.severity == pb.PROCESS_EXCEPTION_SEVERITY_HIGH
    assert first.process_exception.message.endswith("Escalated to high: unresolved for 4:00:00")
    assert first.process_exception.HasField("escalated_at")
    assert again == first
    assert later.process_exception.severity == pb.PROCESS_EXCEPTION_SEVERITY_CRITICAL


async def test_listing_filters_by_severity_and_age(servicing: Stub) -> None:
    order_id = an_order()
    low = await servicing.RecordProcessException(
        a_record(order_id, severity=pb.PROCESS_EXCEPTION_SEVERITY_LOW)
    )
    high = await servicing.RecordProcessException(a_record(order_id))
    between = high.process_exception.created_at

    lows = await listed(
        servicing, order_id=order_id, severities=[pb.PROCESS_EXCEPTION_SEVERITY_LOW]
    )
    older = await listed(servicing, order_id=order_id, created_before=between)

    assert [e.process_exception_id for e in lows] == [low.process_exception.process_exception_id]
    assert [e.process_exception_id for e in older] == [low.process_exception.process_exception_id]


# ---- return orders, as the workflow records them --------------------------------------------


def a_return_order(order_id: str, return_order_id: str) -> pb.CreateReturnOrderRequest:
    return pb.CreateReturnOrderRequest(
        order_id=order_id,
        idempotency_key=f"{order_id}:rma:chg-1",
        return_order_id=return_order_id,
        reason="too small",
        lines=[
            pb.ItemQuantity(order_line_id="line-1", quantity=2),
            pb.ItemQuantity(order_line_id="line-2", quantity=1),
        ],
    )


async def test_a_return_order_is_received_in_parts_until_every_unit_is_back(
    servicing: Stub,
) -> None:
    order_id = an_order()
    rma_id = f"{order_id}-R1"
    created = await servicing.CreateReturnOrder(a_return_order(order_id, rma_id))
    replayed = await servicing.CreateReturnOrder(a_return_order(order_id, rma_id))

    def receipt(key: str, **items: object) -> pb.RecordReturnReceiptRequest:
        return pb.RecordReturnReceiptRequest(
            order_id=order_id, idempotency_key=key, return_order_id=rma_id, **items
        )

    part = await servicing.RecordReturnReceipt(
        receipt("r1", accepted=[pb.ItemQuantity(order_line_id="line-1", quantity=1)])
    )
    await servicing.RecordReturnReceipt(
        receipt("r1", accepted=[pb.ItemQuantity(order_line_id="line-1", quantity=1)])
    )
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await servicing.RecordReturnReceipt(
            receipt("r2", accepted=[pb.ItemQuantity(order_line_id="line-1", quantity=2)])
        )
    rest = await servicing.RecordReturnReceipt(
        pb.RecordReturnReceiptRequest(
            order_id=order_id,
            idempotency_key="r3",
            return_order_id=rma_id,
            accepted=[pb.ItemQuantity(order_line_id="line-1", quantity=1)],
            rejected=[pb.ItemQuantity(order_line_id="line-2", quantity=1)],
            reason="worn",
        )
    )
    listed_rmas = await servicing.ListReturnOrders(pb.ListReturnOrdersRequest(order_id=order_id))

    assert created.return_order.status == pb.RETURN_ORDER_STATUS_OPEN
    assert replayed == created
    assert part.return_order.status == pb.RETURN_ORDER_STATUS_PARTIALLY_RECEIVED
    assert too_many.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rest.return_order.status == pb.RETURN_ORDER_STATUS_RECEIVED
    [returned] = listed_rmas.return_orders
    assert returned == rest.return_order
    assert [
        (
            li.order_line_id,
            li.quantity_expected,
            li.quantity_received,
            li.quantity_accepted,
            li.quantity_rejected,
            li.rejection_reason,
        )
        for li in returned.lines
    ] == [("line-1", 2, 2, 2, 0, ""), ("line-2", 1, 1, 0, 1, "worn")]


async def test_a_return_order_id_taken_by_another_request_is_already_exists(
    servicing: Stub,
) -> None:
    order_id = an_order()
    await servicing.CreateReturnOrder(a_return_order(order_id, f"{order_id}-R1"))
    other = a_return_order(order_id, f"{order_id}-R1")
    other.idempotency_key = "another-change"

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await servicing.CreateReturnOrder(other)

    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS


# ---- changes: what is refused before the workflow is asked -----------------------------------


async def test_a_bad_return_request_names_every_bad_field(servicing: Stub) -> None:
    request = pb.SubmitReturnRequest(
        order_id="",
        idempotency_key="",
        lines=[
            pb.ReturnItem(order_line_id="", quantity=1),
            pb.ReturnItem(order_line_id="line-2", quantity=0, condition=42),  # type: ignore[arg-type]
        ],
        return_fee_minor=-100,
    )

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await servicing.SubmitReturn(request)

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(error.value)] == [
        "order_id",
        "idempotency_key",
        "reason",
        "lines[0].order_line_id",
        "lines[1].quantity",
        "lines[1].condition",
        "return_fee_minor",
    ]


async def test_a_bad_appeasement_or_receipt_names_every_bad_field(servicing: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as appeasement:
        await servicing.SubmitAppeasement(
            pb.SubmitAppeasementRequest(order_id="o-1", idempotency_key="k", reason="late")
        )
    with pytest.raises(grpc.aio.AioRpcError) as receipt:
        await servicing.ReceiveReturn(
            pb.ReceiveReturnRequest(
                idempotency_key="k",
                rejected=[pb.RejectedItem(order_line_id="line-1", quantity=1)],
            )
        )

    assert [name for name, _ in field_violations(appeasement.value)] == ["goodwill"]
    assert [name for name, _ in field_violations(receipt.value)] == [
        "return_order_id",
        "rejected[0].reason",
    ]


async def test_with_temporal_out_of_reach_a_change_is_unavailable_and_left_pending(
    settings: Settings,
) -> None:
    running = await start_service(
        "servicing", replace(settings, temporal_address="127.0.0.1:1"), port=0
    )
    order_id = an_order()
    try:
        async with persona_channel(settings, f"127.0.0.1:{running.port}") as channel:
            stub = servicing_pb2_grpc.ServicingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.SubmitCancel(
                    pb.SubmitCancelRequest(
                        order_id=order_id, idempotency_key="k-1", reason="duplicate order"
                    )
                )
            changes = await stub.ListChanges(pb.ListChangesRequest(order_id=order_id))
    finally:
        await running.stop(0.5)

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    [change] = changes.changes
    assert (change.kind, change.status, change.reason) == (
        pb.CHANGE_KIND_CANCEL,
        pb.CHANGE_STATUS_PENDING,
        "duplicate order",
    )
