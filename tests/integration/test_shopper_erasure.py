"""EraseShopper through the real stack: a shopper's orders reach fulfilled (one returned),
the shopper is erased, and no column of any table in any schema holds their email, name,
phone, address line or postal code any more, while money and quantities stay as they were."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc
from oms.servicing.v1 import servicing_pb2, servicing_pb2_grpc
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowExecutionStatus

from oms_platform import temporal
from oms_platform.codec import Shredded
from oms_tools.samples import sample_order
from tests.conftest import System, wait_for
from workflows.types import order_workflow_id

SETTLED = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}

# Every column type that can carry text, in every schema of the database.
SQL_TEXT_COLUMNS = """
SELECT c.table_schema, c.table_name, c.column_name, c.data_type
FROM information_schema.columns c
JOIN information_schema.tables t
  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE t.table_type = 'BASE TABLE'
  AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
  AND c.table_schema NOT LIKE 'pg_toast%'
  AND (c.data_type IN ('text', 'character varying', 'character', 'jsonb', 'json', 'bytea')
       OR (c.data_type = 'ARRAY' AND c.udt_name IN ('_text', '_varchar')))
ORDER BY 1, 2, 3"""


@dataclass(frozen=True)
class Person:
    """A shopper with personal data no other test uses, so a scan finds only theirs."""

    email: str
    name: str
    phone: str
    line1: str
    postal_code: str

    @classmethod
    def new(cls) -> Person:
        tag = uuid.uuid4().hex[:8]
        digits = str(int(tag, 16) % 10_000).zfill(4)
        return cls(
            email=f"erase.{tag}@example.com",
            name=f"Erin Erasable-{tag}",
            phone=f"+1 415 555 {digits}",
            line1=f"{tag} Forget-Me Lane",
            postal_code=f"19106-{digits}",
        )

    def identifying(self) -> list[str]:
        return [self.email, self.name, self.phone, self.line1, self.postal_code]


def order_for(person: Person) -> capture_pb2.SubmitOrderRequest:
    request = sample_order(email=person.email, token="tok_visa_4242")
    request.shopper.name = person.name
    request.shopper.phone = person.phone
    group = request.delivery_groups[0]
    group.recipient_name = person.name
    group.address.line1 = person.line1
    group.address.line2 = f"c/o {person.name}"
    group.address.postal_code = person.postal_code
    request.billing_address.CopyFrom(group.address)
    return request


async def places_holding(dsn: str, text: str) -> list[str]:
    """Every schema.table.column of the database whose value contains `text` anywhere."""
    conn = await asyncpg.connect(dsn)
    try:
        found: list[str] = []
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        for schema, table, column, data_type in await conn.fetch(SQL_TEXT_COLUMNS):
            name = f'"{schema}"."{table}"'
            if data_type == "bytea":
                # Stored protobuf answers: strings are their UTF-8 bytes inside.
                query = (
                    f"SELECT count(*) FROM {name} "
                    f"WHERE position(convert_to($1, 'UTF8') in \"{column}\") > 0"
                )
                hits = await conn.fetchval(query, text)
                hits += await conn.fetchval(query, text.lower())
            else:
                query = f'SELECT count(*) FROM {name} WHERE "{column}"::text ILIKE $1'
                hits = await conn.fetchval(query, pattern)
            if hits:
                found.append(f"{schema}.{table}.{column}")
        return found
    finally:
        await conn.close()


@dataclass(frozen=True)
class Money:
    """What erasure must not change: totals, buckets, payment summary, reconciliation."""

    totals: capture_pb2.OrderTotals
    quantities: list[tuple[str, capture_pb2.LineQuantities]]
    summary: payments_pb2.PaymentSummary
    reconciliation: payments_pb2.Reconciliation


async def money_of(system: System, order_id: str) -> Money:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    view = await capture.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
    assert not view.missing_sections
    reconciliation = await payments.GetReconciliation(
        payments_pb2.GetReconciliationRequest(order_id=order_id), timeout=10
    )
    return Money(
        totals=view.order.totals,
        quantities=[(line.order_line_id, line.quantities) for line in view.order.lines],
        summary=view.payment_summary,
        reconciliation=reconciliation.reconciliation,
    )


async def started_input(system: System, order_id: str) -> list[Payload]:
    """The sealed input of an order's workflow, as the Temporal server holds it."""
    handle = system.client.get_workflow_handle(order_workflow_id(order_id))
    history = await handle.fetch_history()
    return list(history.events[0].workflow_execution_started_event_attributes.input.payloads)


async def return_one_mug(system: System, order: capture_pb2.Order, person: Person) -> None:
    """A return received and refunded, with the shopper named in its reason."""
    servicing = servicing_pb2_grpc.ServicingServiceStub(system.channel("servicing"))
    mug = next(line for line in order.lines if line.sku == "SKU-MUG")
    opened = await servicing.SubmitReturn(
        servicing_pb2.SubmitReturnRequest(
            order_id=order.order_id,
            idempotency_key="return-mug",
            reason=f"{person.name} ({person.email}) says it is chipped",
            lines=[
                servicing_pb2.ReturnItem(
                    order_line_id=mug.order_line_id, quantity=1, reason="chipped"
                )
            ],
        ),
        timeout=30,
    )
    await servicing.ReceiveReturn(
        servicing_pb2.ReceiveReturnRequest(
            return_order_id=opened.change.outcome.return_order_id,
            order_id=order.order_id,
            idempotency_key="receive-mug",
            note=f"received from {person.name}",
            accepted=[
                servicing_pb2.ReceivedItem(
                    order_line_id=mug.order_line_id,
                    quantity=1,
                    condition=servicing_pb2.ITEM_CONDITION_DAMAGED,
                )
            ],
        ),
        timeout=30,
    )


async def test_an_erased_shopper_leaves_no_personal_data_in_any_table_and_money_unchanged(
    system: System,
) -> None:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    erin, other = Person.new(), Person.new()
    async with system.simulator():
        first = (await capture.SubmitOrder(order_for(erin), timeout=10)).order
        second = (await capture.SubmitOrder(order_for(erin), timeout=10)).order
        theirs = (await capture.SubmitOrder(order_for(other), timeout=10)).order
        for order in (first, second, theirs):
            await wait_for(capture, order.order_id, SETTLED)
    await return_one_mug(system, second, erin)
    before = {o.order_id: await money_of(system, o.order_id) for o in (first, second, theirs)}
    for text in erin.identifying():
        assert await places_holding(system.settings.dsn, text), f"{text} was never stored"

    admin = capture_pb2_grpc.CaptureServiceStub(
        system.channel("capture", "admin", subject="privacy-officer")
    )
    answer = await admin.EraseShopper(
        capture_pb2.EraseShopperRequest(email=erin.email.upper()), timeout=60
    )

    erasure = answer.erasure
    assert erasure.shopper_id == first.shopper.shopper_id
    assert erasure.order_count == 2 and erasure.canceled_count == 0
    # Who asked is the authenticated caller.
    assert erasure.requested_by == "privacy-officer" and erasure.HasField("completed_at")
    for text in erin.identifying():
        assert await places_holding(system.settings.dsn, text) == [], text
    for text in other.identifying():
        assert await places_holding(system.settings.dsn, text), f"{text} of another was erased"
    for order_id, money in before.items():
        after = await money_of(system, order_id)
        assert after == money
        assert after.reconciliation.agrees
    view = await capture.GetOrder(capture_pb2.GetOrderRequest(order_id=first.order_id), timeout=10)
    assert (view.order.shopper.email, view.order.shopper.name, view.order.shopper.phone) == (
        "",
        "",
        "",
    )
    assert view.order.payment_method.token == "…4242"
    assert view.timeline[-1].kind == "order.personal_data_erased"
    # Their workflows, which were waiting out the return window, are over.
    for order in (first, second):
        handle = system.client.get_workflow_handle(order_workflow_id(order.order_id))
        assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
    # And their Temporal histories decode nowhere any more: the orders' data keys are gone.
    codec = temporal.codec_of(system.client)
    for order in (first, second):
        with pytest.raises(Shredded):
            await codec.decode(await started_input(system, order.order_id))
    [still] = await codec.decode(await started_input(system, theirs.order_id))
    assert theirs.order_id in still.data.decode()
    other_view = await capture.GetOrder(
        capture_pb2.GetOrderRequest(order_id=theirs.order_id), timeout=10
    )
    assert other_view.order.shopper.email == other.email

    # Asked again, by id or by the email that is no longer stored: the same record.
    again = await admin.EraseShopper(
        capture_pb2.EraseShopperRequest(shopper_id=erasure.shopper_id), timeout=60
    )
    assert again.erasure == erasure
    by_email = await admin.EraseShopper(
        capture_pb2.EraseShopperRequest(email=erin.email), timeout=60
    )
    assert by_email.erasure == erasure
    # Nobody but an admin may erase.
    agent = capture_pb2_grpc.CaptureServiceStub(system.channel("capture", "agent"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await agent.EraseShopper(capture_pb2.EraseShopperRequest(email=other.email), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_order_in_flight_is_refused_unless_forced_then_canceled_and_erased(
    system: System,
) -> None:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    dana = Person.new()
    # No simulator: the order waits at its warehouse, allocated.
    order = (await capture.SubmitOrder(order_for(dana), timeout=10)).order
    await wait_for(capture, order.order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await capture.EraseShopper(capture_pb2.EraseShopperRequest(email=dana.email), timeout=60)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert order.order_id in (refused.value.details() or "")
    assert await places_holding(system.settings.dsn, dana.line1)

    answer = await capture.EraseShopper(
        capture_pb2.EraseShopperRequest(email=dana.email, force=True, reason="ticket 123"),
        timeout=60,
    )

    assert (answer.erasure.order_count, answer.erasure.canceled_count) == (1, 1)
    view = await wait_for(capture, order.order_id, SETTLED)
    assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED
    for text in dana.identifying():
        assert await places_holding(system.settings.dsn, text) == [], text
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    reconciliation = await payments.GetReconciliation(
        payments_pb2.GetReconciliationRequest(order_id=order.order_id), timeout=10
    )
    assert reconciliation.reconciliation.agrees
    assert reconciliation.reconciliation.captured.amount_minor == 0
