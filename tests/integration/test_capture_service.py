"""CaptureService over real gRPC and real Postgres; the other services are not running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2
from temporalio.service import RPCError

from oms_platform import auth, db, temporal
from oms_platform.codec import migrate_vault
from oms_platform.grpcutil import field_violations
from oms_platform.service import RunningService
from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import TemporalDevServer, free_port
from oms_tools.registry import start_service
from services.capture import bootstrap
from tests.callers import channel_as, persona_channel
from tests.conftest import TEST_CODEC_KEYS
from workflows.search_attributes import ORDER_CHANNEL, ORDER_STATUS

pb = capture_pb2


async def own_database(postgres: EmbeddedPostgres, name: str) -> str:
    """A database of this module's own with capture's schema migrated, so no other test's
    outbox relay can deliver (and delete) the rows asserted on here."""
    base, _, query = postgres.dsn.partition("?")
    dsn = base.rpartition("/")[0] + f"/{name}" + (f"?{query}" if query else "")
    await db.ensure_database(dsn)
    await db.migrate(dsn, bootstrap.SCHEMA, bootstrap.MIGRATIONS)
    await migrate_vault(dsn)  # the relay's Temporal client seals the order's payloads
    return dsn


def isolated_settings(dsn: str, **overrides: Any) -> Settings:
    """Capture's settings; every other service points at a port nothing listens on."""
    values: dict[str, Any] = {
        "database_url": dsn,
        "codec_keys_file": str(TEST_CODEC_KEYS),
        "db_pool_min": 1,
        "db_pool_max": 5,
        "log_format": "console",
        "temporal_address": f"127.0.0.1:{free_port()}",
        "get_order_deadline_seconds": 1.0,
        "outbox_poll_seconds": 30.0,
        **{f"{name}_port": free_port() for name in SERVICES},
    }
    values.update(overrides)
    return Settings.from_env(env={}, **values)


@pytest.fixture(scope="module")
async def capture_settings(postgres: EmbeddedPostgres) -> Settings:
    """Capture alone, without Temporal: the outbox keeps its rows, GetOrder misses sections."""
    return isolated_settings(await own_database(postgres, "oms_capture_it"))


@pytest.fixture(scope="module")
async def capture_service(capture_settings: Settings) -> AsyncIterator[RunningService]:
    running = await start_service("capture", capture_settings, port=0)
    yield running
    await running.stop(0.5)


@contextlib.asynccontextmanager
async def capture_as(
    settings: Settings, running: RunningService, role: str
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    """A stub to the running capture service whose calls carry a token of `role`."""
    async with channel_as(settings, f"127.0.0.1:{running.port}", role) as channel:
        yield capture_pb2_grpc.CaptureServiceStub(channel)


@pytest.fixture(scope="module")
async def capture(
    capture_settings: Settings, capture_service: RunningService
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    """Capture as an admin sees it (submits, reads, imports)."""
    async with capture_as(capture_settings, capture_service, auth.ADMIN) as stub:
        yield stub


@pytest.fixture(scope="module")
async def lifecycle(
    capture_settings: Settings, capture_service: RunningService
) -> AsyncIterator[capture_pb2_grpc.CaptureServiceStub]:
    """Capture as the worker sees it: RecordOrderProgress is the lifecycle's alone."""
    async with capture_as(capture_settings, capture_service, auth.WORKFLOW) as stub:
        yield stub


@pytest.fixture(scope="module")
async def sql(capture_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for checking what was (not) stored."""
    conn = await asyncpg.connect(capture_settings.dsn)
    yield conn
    await conn.close()


def usd(amount_minor: int, currency: str = "USD") -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=currency)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def order_request(
    email: str | None = None,
    channel: int = pb.CHANNEL_WEB,
    channel_customer_id: str = "",
    **overrides: Any,
) -> pb.SubmitOrderRequest:
    """2 x 10.00 (1.60 tax) + 1 x 5.00 to one address, 4.99 shipping, 3.00 off the order:
    25.00 - 3.00 + 1.60 + 4.99 = 28.59 USD."""
    request = pb.SubmitOrderRequest(
        idempotency_key=unique("key"),
        channel=channel,  # type: ignore[arg-type]
        channel_order_ref=unique("ref"),
        shopper=pb.Shopper(
            email=email or f"{unique('shopper')}@example.com",
            name="Ada Lovelace",
            channel_customer_id=channel_customer_id,
        ),
        currency="USD",
        delivery_groups=[
            pb.DeliveryGroup(
                ref="home",
                recipient_name="Ada Lovelace",
                address=common_pb2.PostalAddress(
                    line1="1 Main St", city="Springfield", postal_code="12345", country_code="US"
                ),
                delivery_method="standard",
                shipping_charge=usd(499),
            )
        ],
        lines=[
            pb.OrderLine(
                delivery_group_ref="home",
                sku="MUG-1",
                name="Mug",
                quantity=2,
                unit_price=usd(1000),
                taxes=[pb.TaxLine(name="state tax", amount=usd(160))],
            ),
            pb.OrderLine(
                delivery_group_ref="home", sku="TEA-1", name="Tea", quantity=1, unit_price=usd(500)
            ),
        ],
        discounts=[pb.Adjustment(code="WELCOME", description="3 off", amount=usd(300))],
        grand_total=usd(2859),
        payment_method=payments_pb2.PaymentMethod(
            type=payments_pb2.PAYMENT_METHOD_TYPE_CARD, token="tok_visa"
        ),
    )
    for name, value in overrides.items():
        setattr(request, name, value)
    return request


async def outbox_rows(sql: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    return await sql.fetch(
        "SELECT kind, name, payload FROM capture.outbox WHERE workflow_id = $1",
        f"order:{order_id}",
    )


# ---- SubmitOrder ----------------------------------------------------------------------------


async def test_a_submitted_order_is_stored_pending_and_its_lifecycle_start_is_queued(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    response = await capture.SubmitOrder(order_request(email="  Ada.L@Example.COM "))
    order = response.order
    assert response.duplicate is False
    assert order.status == pb.ORDER_STATUS_PENDING
    assert order.shopper.email == "ada.l@example.com"
    assert order.shopper.shopper_id
    assert [(line.sku, line.quantity) for line in order.lines] == [("MUG-1", 2), ("TEA-1", 1)]
    # 3.00 off split by the lines' nets 20.00 and 5.00.
    assert [line.allocated_order_discount.amount_minor for line in order.lines] == [240, 60]
    assert [line.total.amount_minor for line in order.lines] == [2000 - 240 + 160, 500 - 60]
    assert [line.quantities.ordered for line in order.lines] == [2, 1]
    t = order.totals
    assert (t.subtotal.amount_minor, t.discounts.amount_minor, t.tax.amount_minor) == (
        2500,
        300,
        160,
    )
    assert (t.shipping.amount_minor, t.grand_total.amount_minor) == (499, 2859)
    group_id = order.delivery_groups[0].delivery_group_id
    assert {line.delivery_group_ref for line in order.lines} == {group_id}

    rows = await outbox_rows(sql, order.order_id)
    assert len(rows) == 1
    assert (rows[0]["kind"], rows[0]["name"]) == ("start", "OrderLifecycle")
    payload = json.loads(rows[0]["payload"])
    assert payload["order_id"] == order.order_id
    assert payload["channel"] == "web"
    assert payload["currency"] == "USD"
    assert payload["grand_total_minor"] == 2859
    assert payload["payment_method"] == {
        "type": "card",
        "token": "tok_visa",
        "preauthorization_ref": "",
    }
    assert payload["delivery_groups"] == [
        {
            "delivery_group_id": group_id,
            "address": {
                "line1": "1 Main St",
                "city": "Springfield",
                "postal_code": "12345",
                "country_code": "US",
                "line2": "",
                "region": "",
            },
            "shipping_minor": 499,
            "delivery_method": "standard",
            "pickup_location_id": "",
        }
    ]
    assert [
        (
            line["sku"],
            line["quantity"],
            line["gross_minor"],
            line["discount_minor"],
            line["tax_minor"],
        )
        for line in payload["lines"]
    ] == [("MUG-1", 2, 2000, 240, 160), ("TEA-1", 1, 500, 60, 0)]

    timeline = await capture.GetOrderTimeline(pb.GetOrderTimelineRequest(order_id=order.order_id))
    assert [(e.kind, e.actor) for e in timeline.events] == [("order.captured", "shopper")]


async def test_resubmitting_the_same_order_returns_it_as_a_duplicate_and_stores_nothing_new(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    request = order_request()
    first = await capture.SubmitOrder(request)
    again = await capture.SubmitOrder(request)
    assert again.duplicate is True
    assert again.order.order_id == first.order.order_id
    count = await sql.fetchval(
        "SELECT count(*) FROM capture.orders WHERE channel_order_ref = $1",
        request.channel_order_ref,
    )
    assert count == 1
    assert len(await outbox_rows(sql, first.order.order_id)) == 1


async def test_the_same_key_with_another_body_is_already_exists_naming_the_key(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    request = order_request()
    await capture.SubmitOrder(request)
    changed = pb.SubmitOrderRequest()
    changed.CopyFrom(request)
    changed.lines[1].quantity = 2
    changed.grand_total.amount_minor = 2859 + 500
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.SubmitOrder(changed)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert request.idempotency_key in (raised.value.details() or "")


async def test_a_channel_order_ref_is_one_order_per_channel(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    request = order_request()
    await capture.SubmitOrder(request)
    other_key = order_request(channel_order_ref=request.channel_order_ref)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.SubmitOrder(other_key)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "channel_order_ref" in (raised.value.details() or "")
    # Another channel may use the same reference.
    store_order = order_request(
        channel=pb.CHANNEL_STORE, channel_order_ref=request.channel_order_ref
    )
    assert (await capture.SubmitOrder(store_order)).order.channel == pb.CHANNEL_STORE


async def test_a_bad_order_lists_every_bad_field_and_stores_nothing(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    email = f"{unique('bad')}@example.com"
    request = order_request(email=email, currency="USD")
    request.lines[0].quantity = 0
    request.lines[1].unit_price.currency = "EUR"
    request.lines[1].delivery_group_ref = "office"
    request.delivery_groups[0].address.city = ""
    request.payment_method.token = ""
    request.grand_total.amount_minor = 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.SubmitOrder(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = dict(field_violations(raised.value))
    assert {
        "lines[0].quantity",
        "lines[1].unit_price.currency",
        "lines[1].delivery_group_ref",
        "delivery_groups[0].address.city",
        "payment_method.token",
        "grand_total",
    } <= set(fields)
    assert "lines + shipping + tax" in fields["grand_total"]
    stored = await sql.fetchval(
        "SELECT (SELECT count(*) FROM capture.orders WHERE channel_order_ref = $1)"
        " + (SELECT count(*) FROM capture.shoppers WHERE email_normalized = $2)"
        " + (SELECT count(*) FROM capture.idempotency_keys WHERE key LIKE '%' || $3)",
        request.channel_order_ref,
        email,
        request.idempotency_key,
    )
    assert stored == 0


async def test_twenty_concurrent_identical_submissions_make_one_order(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    request = order_request()
    responses = await asyncio.gather(*(capture.SubmitOrder(request) for _ in range(20)))
    assert len({r.order.order_id for r in responses}) == 1
    assert sum(not r.duplicate for r in responses) == 1
    count = await sql.fetchval(
        "SELECT count(*) FROM capture.orders WHERE channel_order_ref = $1",
        request.channel_order_ref,
    )
    assert count == 1
    assert len(await outbox_rows(sql, responses[0].order.order_id)) == 1


async def test_the_same_person_on_web_and_in_store_is_one_shopper(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    email = f"{unique('grace')}@example.com"
    web = await capture.SubmitOrder(order_request(email=email, channel_customer_id=unique("web")))
    store_id = unique("pos")
    in_store = await capture.SubmitOrder(
        order_request(
            email=f"  {email.upper()}", channel=pb.CHANNEL_STORE, channel_customer_id=store_id
        )
    )
    assert in_store.order.shopper.shopper_id == web.order.shopper.shopper_id
    # The store's customer id is now linked: without the email it still finds the shopper.
    by_id_only = order_request(channel=pb.CHANNEL_STORE, channel_customer_id=store_id)
    by_id_only.shopper.email = ""
    again = await capture.SubmitOrder(by_id_only)
    assert again.order.shopper.shopper_id == web.order.shopper.shopper_id
    assert again.order.shopper.channel_customer_id == store_id


async def test_a_new_shoppers_concurrent_first_orders_share_one_shopper(
    capture: capture_pb2_grpc.CaptureServiceStub, sql: asyncpg.Connection
) -> None:
    email = f"{unique('rush')}@example.com"
    responses = await asyncio.gather(
        *(capture.SubmitOrder(order_request(email=email)) for _ in range(10))
    )
    assert len({r.order.order_id for r in responses}) == 10
    assert len({r.order.shopper.shopper_id for r in responses}) == 1
    assert (
        await sql.fetchval(
            "SELECT count(*) FROM capture.shoppers WHERE email_normalized = $1", email
        )
        == 1
    )


async def test_an_agent_order_is_captured_by_the_agent(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request(channel=pb.CHANNEL_AGENT))).order
    timeline = await capture.GetOrderTimeline(pb.GetOrderTimelineRequest(order_id=order.order_id))
    assert [e.actor for e in timeline.events] == ["agent"]


# ---- RecordOrderProgress --------------------------------------------------------------------


def progress(
    order: pb.Order, key: str, status: int, deltas: list[dict[str, int]], kind: str
) -> pb.RecordOrderProgressRequest:
    return pb.RecordOrderProgressRequest(
        order_id=order.order_id,
        idempotency_key=key,
        status=status,  # type: ignore[arg-type]
        line_changes=[
            pb.LineQuantityChange(order_line_id=line.order_line_id, delta=pb.LineQuantities(**d))
            for line, d in zip(order.lines, deltas, strict=False)
        ],
        event=common_pb2.TimelineEvent(kind=kind, summary=kind, actor="workflow"),
    )


async def test_progress_moves_buckets_status_and_timeline_once_per_key(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    allocate = progress(
        order,
        "allocate",
        pb.ORDER_STATUS_ALLOCATED,
        [{"allocated": 2}, {"allocated": 1}],
        "order.allocated",
    )
    after = (await lifecycle.RecordOrderProgress(allocate)).order
    assert after.status == pb.ORDER_STATUS_ALLOCATED
    assert [line.quantities.allocated for line in after.lines] == [2, 1]
    replay = (await lifecycle.RecordOrderProgress(allocate)).order
    assert [line.quantities.allocated for line in replay.lines] == [2, 1]

    ship = progress(
        order,
        "ship-1",
        pb.ORDER_STATUS_PARTIALLY_SHIPPED,
        [{"allocated": -2, "fulfilled": 2}],
        "shipment.shipped",
    )
    shipped = (await lifecycle.RecordOrderProgress(ship)).order
    assert [(q.quantities.allocated, q.quantities.fulfilled) for q in shipped.lines] == [
        (0, 2),
        (1, 0),
    ]
    assert shipped.updated_at.ToDatetime() >= order.updated_at.ToDatetime()

    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.status == pb.ORDER_STATUS_PARTIALLY_SHIPPED
    assert [e.kind for e in view.timeline] == [
        "order.captured",
        "order.allocated",
        "shipment.shipped",
    ]


async def test_progress_that_omits_the_order_records_the_step_and_answers_without_it(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    allocate = progress(
        order, "lean", pb.ORDER_STATUS_ALLOCATED, [{"allocated": 2}], "fulfillment.allocated"
    )
    allocate.omit_order = True
    answer = await lifecycle.RecordOrderProgress(allocate)
    assert not answer.HasField("order")
    # The step is recorded all the same, once, and a replay answers the same way.
    assert not (await lifecycle.RecordOrderProgress(allocate)).HasField("order")
    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.status == pb.ORDER_STATUS_ALLOCATED
    assert [line.quantities.allocated for line in view.order.lines] == [2, 0]
    assert [e.kind for e in view.timeline] == ["order.captured", "fulfillment.allocated"]


async def test_progress_that_would_drop_a_bucket_below_zero_is_refused(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await lifecycle.RecordOrderProgress(
            progress(order, "oops", pb.ORDER_STATUS_SHIPPED, [{"fulfilled": -1}], "x")
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.status == pb.ORDER_STATUS_PENDING
    assert len(view.timeline) == 1


async def test_progress_on_an_unknown_order_is_not_found(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await lifecycle.RecordOrderProgress(
            pb.RecordOrderProgressRequest(
                order_id=unique("nope"), idempotency_key="k", status=pb.ORDER_STATUS_PROCESSING
            )
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_progress_batch_records_its_steps_in_order_once_per_key(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    allocate = progress(
        order, "b-allocate", pb.ORDER_STATUS_ALLOCATED, [{"allocated": 2}], "fulfillment.allocated"
    )
    ship = progress(
        order,
        "b-ship",
        pb.ORDER_STATUS_PARTIALLY_SHIPPED,
        [{"allocated": -2, "fulfilled": 2}],
        "shipment.shipped",
    )
    ship.order_id = ""  # a step may leave the order to the batch
    batch = pb.RecordOrderProgressBatchRequest(order_id=order.order_id, steps=[allocate, ship])
    assert (await lifecycle.RecordOrderProgressBatch(batch)).applied == 2
    # Again: nothing new. One step alone, under its key, answers as already recorded too.
    assert (await lifecycle.RecordOrderProgressBatch(batch)).applied == 0
    allocate.omit_order = True
    assert not (await lifecycle.RecordOrderProgress(allocate)).HasField("order")

    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.status == pb.ORDER_STATUS_PARTIALLY_SHIPPED
    assert [(q.quantities.allocated, q.quantities.fulfilled) for q in view.order.lines] == [
        (0, 2),
        (0, 0),
    ]
    assert [e.kind for e in view.timeline] == [
        "order.captured",
        "fulfillment.allocated",
        "shipment.shipped",
    ]


async def test_a_step_given_twice_in_one_batch_is_recorded_once(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    allocate = progress(
        order, "t-allocate", pb.ORDER_STATUS_ALLOCATED, [{"allocated": 2}], "fulfillment.allocated"
    )
    authorized = progress(order, "t-auth", pb.ORDER_STATUS_UNSPECIFIED, [], "payment.authorized")
    batch = pb.RecordOrderProgressBatchRequest(
        order_id=order.order_id, steps=[allocate, authorized, allocate]
    )
    assert (await lifecycle.RecordOrderProgressBatch(batch)).applied == 2

    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.lines[0].quantities.allocated == 2
    assert [e.kind for e in view.timeline] == [
        "order.captured",
        "fulfillment.allocated",
        "payment.authorized",
    ]


async def test_a_step_told_again_differently_keeps_the_first_telling_without_an_error(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    """A workflow task lost after its report was recorded, retried down another path (an
    Update redelivered after the lifecycle moved on): the same step's key comes with another
    body. The first telling stands, and the call answers as for a repeat."""
    order = (await capture.SubmitOrder(order_request())).order
    allocate = progress(
        order, "d-allocate", pb.ORDER_STATUS_ALLOCATED, [{"allocated": 2}], "fulfillment.allocated"
    )
    batch = pb.RecordOrderProgressBatchRequest(order_id=order.order_id, steps=[allocate])
    assert (await lifecycle.RecordOrderProgressBatch(batch)).applied == 1

    retold = pb.RecordOrderProgressRequest()
    retold.CopyFrom(allocate)
    retold.status = pb.ORDER_STATUS_SHIPPED
    retold.line_changes[0].delta.fulfilled = 2
    retold.event.summary = "told differently"
    later = progress(order, "d-later", pb.ORDER_STATUS_UNSPECIFIED, [], "payment.authorized")
    again = pb.RecordOrderProgressBatchRequest(order_id=order.order_id, steps=[retold, later])
    # The retold step is not applied again; the batch's new step is.
    assert (await lifecycle.RecordOrderProgressBatch(again)).applied == 1
    retold.omit_order = True
    await lifecycle.RecordOrderProgress(retold)  # alone too: answered, not refused

    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.status == pb.ORDER_STATUS_ALLOCATED
    first = view.order.lines[0].quantities
    assert (first.allocated, first.fulfilled) == (2, 0)
    assert [e.kind for e in view.timeline] == [
        "order.captured",
        "fulfillment.allocated",
        "payment.authorized",
    ]
    assert "told differently" not in [e.summary for e in view.timeline]


async def test_a_progress_batch_with_a_refused_step_writes_nothing_and_names_the_step(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    allocate = progress(
        order, "r-allocate", pb.ORDER_STATUS_ALLOCATED, [{"allocated": 2}], "fulfillment.allocated"
    )
    too_many = progress(order, "r-ship", pb.ORDER_STATUS_SHIPPED, [{"fulfilled": -1}], "x")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await lifecycle.RecordOrderProgressBatch(
            pb.RecordOrderProgressBatchRequest(order_id=order.order_id, steps=[allocate, too_many])
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (raised.value.details() or "").startswith("steps[1]: ")
    # The first step was not written either, and stays free to record on its own.
    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.status == pb.ORDER_STATUS_PENDING and len(view.timeline) == 1
    allocate.omit_order = True
    await lifecycle.RecordOrderProgress(allocate)
    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order.status == pb.ORDER_STATUS_ALLOCATED


async def test_a_malformed_progress_batch_is_refused_naming_each_field(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    elsewhere = progress(order, "k1", pb.ORDER_STATUS_ALLOCATED, [], "x")
    elsewhere.order_id = "another-order"
    keyless = progress(order, "", pb.ORDER_STATUS_ALLOCATED, [], "x")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await lifecycle.RecordOrderProgressBatch(
            pb.RecordOrderProgressBatchRequest(order_id=order.order_id, steps=[elsewhere, keyless])
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert "steps[0].order_id: must be the batch's order_id" in details
    assert "steps[1].idempotency_key: is required" in details
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await lifecycle.RecordOrderProgressBatch(
            pb.RecordOrderProgressBatchRequest(order_id=order.order_id)
        )
    assert "steps: at least one step is required" in (raised.value.details() or "")


# ---- reading --------------------------------------------------------------------------------


async def test_get_order_answers_without_the_other_services_naming_what_is_missing(
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    order = (await capture.SubmitOrder(order_request())).order
    view = await capture.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert view.order == order
    assert sorted(view.missing_sections) == ["fulfillment", "payments", "servicing"]
    assert [e.kind for e in view.timeline] == ["order.captured"]

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.GetOrder(pb.GetOrderRequest(order_id=unique("nope")))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_orders_pages_newest_first_and_filters(
    lifecycle: capture_pb2_grpc.CaptureServiceStub,
    capture: capture_pb2_grpc.CaptureServiceStub,
) -> None:
    email = f"{unique('lister')}@example.com"
    placed = [
        (await capture.SubmitOrder(order_request(email=email))).order.order_id for _ in range(5)
    ]
    shopper_id = (
        await capture.GetOrder(pb.GetOrderRequest(order_id=placed[0]))
    ).order.shopper.shopper_id

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await capture.ListOrders(
            pb.ListOrdersRequest(shopper_id=shopper_id, page_size=2, page_token=token)
        )
        seen += [o.order_id for o in page.orders]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(placed))
    assert pages == 3

    await lifecycle.RecordOrderProgress(
        pb.RecordOrderProgressRequest(
            order_id=placed[1], idempotency_key="start", status=pb.ORDER_STATUS_PROCESSING
        )
    )
    processing = await capture.ListOrders(
        pb.ListOrdersRequest(shopper_id=shopper_id, statuses=[pb.ORDER_STATUS_PROCESSING])
    )
    assert [o.order_id for o in processing.orders] == [placed[1]]
    pending = await capture.ListOrders(
        pb.ListOrdersRequest(
            shopper_id=shopper_id, statuses=[pb.ORDER_STATUS_PENDING, pb.ORDER_STATUS_CANCELED]
        )
    )
    assert len(pending.orders) == 4
    other_channel = await capture.ListOrders(
        pb.ListOrdersRequest(shopper_id=shopper_id, channel=pb.CHANNEL_MARKETPLACE)
    )
    assert list(other_channel.orders) == []

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await capture.ListOrders(pb.ListOrdersRequest(page_token="not-a-token"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- the outbox relay -----------------------------------------------------------------------


async def test_the_relay_starts_the_lifecycle_searchable_as_processing_on_its_channel(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer
) -> None:
    dsn = await own_database(postgres, "oms_capture_relay_it")
    settings = isolated_settings(
        dsn,
        temporal_address=temporal_server.target,
        task_queue=unique("capture-relay"),
        outbox_poll_seconds=0.2,
    )
    running = await start_service("capture", settings, port=0)
    try:
        async with persona_channel(settings, f"127.0.0.1:{running.port}") as channel:
            stub = capture_pb2_grpc.CaptureServiceStub(channel)
            order = (await stub.SubmitOrder(order_request(channel=pb.CHANNEL_MARKETPLACE))).order
        client = await temporal.connect(settings)
        handle = client.get_workflow_handle(f"order:{order.order_id}")
        description = None
        for _ in range(100):
            try:
                description = await handle.describe()
                break
            except RPCError:
                await asyncio.sleep(0.1)
        assert description is not None, "the relay never started the workflow"
        assert description.workflow_type == "OrderLifecycle"
        attributes = description.typed_search_attributes
        assert attributes.get(ORDER_STATUS) == "processing"
        assert attributes.get(ORDER_CHANNEL) == "marketplace"
        conn = await asyncpg.connect(dsn)
        try:
            # The row is deleted in the relay's transaction, just after the start succeeds.
            left = -1
            for _ in range(50):
                left = await conn.fetchval("SELECT count(*) FROM capture.outbox")
                if left == 0:
                    break
                await asyncio.sleep(0.1)
            assert left == 0
        finally:
            await conn.close()
        await handle.terminate("test over")
        await temporal.close(client)
    finally:
        await running.stop(0.5)
