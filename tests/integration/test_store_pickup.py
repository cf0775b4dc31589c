"""Store pickup through capture, fulfillment, payments and the real order workflow, with mail
to a real SMTP sink: a pickup order is routed to the store that holds its stock (never to a
nearer warehouse), set aside there, the shopper mailed, collected, and the order fulfilled
with its money captured; one not collected by its deadline is canceled, its authorization
voided and its stock available again. Only the store's own warehouse role hands it over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, cast

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2 as pb
from oms.fulfillment.v1 import fulfillment_pb2_grpc
from oms.payments.v1 import payments_pb2, payments_pb2_grpc

from oms_platform.settings import Settings
from oms_tools.devstack.mail_sink import MailSink
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import free_port
from oms_tools.samples import sample_order
from tests.conftest import System, running_system, wait_for
from tests.integration.helpers import eventually
from tests.integration.test_fulfillment_service import level, new_sku, stock

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    Stub = fulfillment_pb2_grpc.FulfillmentServiceAsyncStub

STORE = "store-chicago"
# How long a fulfillment order waits at the store once ready: short enough to see it lapse.
COLLECT_WITHIN_SECONDS = 4.0
SETTLED = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}


@pytest.fixture(scope="module")
async def sink(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MailSink]:
    mail = MailSink(Path(tmp_path_factory.mktemp("mail")), port=free_port()).start()
    yield mail
    mail.stop()


@pytest.fixture(scope="module")
async def pickup_system(
    settings_with_temporal: Settings, postgres: EmbeddedPostgres, sink: MailSink
) -> AsyncIterator[System]:
    async with running_system(
        settings_with_temporal,
        postgres,
        "oms_pickup",
        pickup_collect_within_seconds=COLLECT_WITHIN_SECONDS,
        pickup_sweep_seconds=0.2,
        smtp_port=sink.port,
        notify_poll_seconds=0.1,
    ) as system:
        yield system


def fulfillment(system: System, role: str = "", **identity: object) -> Stub:
    stub = fulfillment_pb2_grpc.FulfillmentServiceStub(
        system.channel("fulfillment", role, **identity)
    )
    return cast("Stub", stub)


def staff(system: System, location: str = STORE) -> Stub:
    """A location's own system: the warehouse role, scoped to that location (the store by
    default)."""
    return fulfillment(system, "warehouse", locations=(location,))


def pickup_order(tee: str, mug: str, email: str) -> capture_pb2.SubmitOrderRequest:
    """The sample order (the shopper lives in Philadelphia, nearer wh-east than Chicago),
    collected at the store: 2 of `tee`, 1 of `mug`."""
    order = sample_order(email=email)
    group = order.delivery_groups[0]
    group.delivery_method = "pickup"
    group.pickup_location_id = STORE
    order.lines[0].sku, order.lines[1].sku = tee, mug
    return order


async def allocated(
    system: System, tee: str, mug: str, email: str
) -> tuple[str, pb.FulfillmentOrder]:
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    order = (await capture.SubmitOrder(pickup_order(tee, mug, email), timeout=10)).order
    view = await wait_for(capture, order.order_id, {capture_pb2.ORDER_STATUS_ALLOCATED})
    [fo] = view.fulfillment_orders
    found = await fulfillment(system).GetFulfillmentOrder(
        pb.GetFulfillmentOrderRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    return order.order_id, found.fulfillment_order


def mails_to(sink: MailSink, address: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if m["To"] == address]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


async def test_a_pickup_order_is_set_aside_at_its_store_mailed_collected_and_captured(
    pickup_system: System, sink: MailSink
) -> None:
    system = pickup_system
    sku, mug, email = new_sku(), new_sku(), f"pickup-{new_sku().lower()}@example.com"
    # The warehouse is nearer the shopper's address and has plenty; pickup still goes to the
    # store, which has the units.
    await stock(fulfillment(system), sku, wh_east=50, store_chicago=3)
    await stock(fulfillment(system), mug, wh_east=50, store_chicago=1)

    order_id, fo = await allocated(system, sku, mug, email)

    assert fo.location_id == STORE
    assert fo.pickup_location_id == STORE
    assert (await level(fulfillment(system), sku, STORE)).reserved == 2
    # Another store's staff cannot touch it; the store's own can.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await staff(system, "wh-east").MarkReadyForPickup(
            pb.MarkReadyForPickupRequest(fulfillment_order_id=fo.fulfillment_order_id)
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ready = await staff(system).MarkReadyForPickup(
        pb.MarkReadyForPickupRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )
    assert ready.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_READY_FOR_PICKUP
    assert ready.fulfillment_order.HasField("pickup_deadline")

    picked = await staff(system).ConfirmPickup(
        pb.ConfirmPickupRequest(fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="c1")
    )

    assert picked.fulfillment_order.status == pb.FULFILLMENT_ORDER_STATUS_PICKED_UP
    assert picked.shipment.HasField("delivered_at")
    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    view = await wait_for(capture, order_id, SETTLED)
    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    summary = await payments.GetPaymentSummary(
        payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
    )
    assert summary.summary.captured.amount_minor == view.order.totals.grand_total.amount_minor
    after = await level(fulfillment(system), sku, STORE)
    assert (after.on_hand, after.reserved) == (1, 0)
    # The shopper was told where to collect it (and got no "on its way" mail for the pickup):
    # mail goes out in the order of its events, so once the delivery's is there, a shipped one
    # would be too.
    mails = await eventually(
        lambda: _now(mails_to(sink, email)),
        lambda found: any("has been delivered" in m["Subject"] for m in found),
        "the delivery's mail",
    )
    [ready_mail] = [m for m in mails if "ready for pickup" in m["Subject"]]
    assert STORE in text_of(ready_mail)
    assert not any("has shipped" in m["Subject"] for m in mails_to(sink, email))


async def test_a_pickup_not_collected_in_time_is_canceled_voided_and_its_stock_restored(
    pickup_system: System,
) -> None:
    system = pickup_system
    sku, mug, email = new_sku(), new_sku(), f"late-{new_sku().lower()}@example.com"
    await stock(fulfillment(system), sku, store_chicago=2)
    await stock(fulfillment(system), mug, store_chicago=1)
    order_id, fo = await allocated(system, sku, mug, email)
    assert (await level(fulfillment(system), sku, STORE)).available_to_fulfill == 0
    await staff(system).MarkReadyForPickup(
        pb.MarkReadyForPickupRequest(fulfillment_order_id=fo.fulfillment_order_id)
    )

    capture = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    view = await wait_for(capture, order_id, SETTLED)

    assert view.order.status == capture_pb2.ORDER_STATUS_CANCELED
    [canceled] = view.fulfillment_orders
    assert canceled.status == pb.FULFILLMENT_ORDER_STATUS_CANCELED
    payments = payments_pb2_grpc.PaymentsServiceStub(system.channel("payments"))
    summary = await payments.GetPaymentSummary(
        payments_pb2.GetPaymentSummaryRequest(order_id=order_id), timeout=10
    )
    assert summary.summary.captured.amount_minor == 0
    assert summary.authorizations
    assert all(a.status == payments_pb2.AUTHORIZATION_STATUS_VOIDED for a in summary.authorizations)
    back = await level(fulfillment(system), sku, STORE)
    assert (back.on_hand, back.reserved, back.available_to_fulfill) == (2, 0, 2)
    assert (await level(fulfillment(system), mug, STORE)).available_to_fulfill == 1
    # Too late to collect it now.
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await staff(system).ConfirmPickup(
            pb.ConfirmPickupRequest(
                fulfillment_order_id=fo.fulfillment_order_id, idempotency_key="late"
            )
        )
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def _now(value: list[EmailMessage]) -> list[EmailMessage]:
    return value
