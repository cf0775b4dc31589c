"""A warehouse heard before the lifecycle: a fulfillment order's steps (RecordOrderEvents, from
fulfillment's outbox) that reach capture before the lifecycle logs the order's allocation
(RecordOrderProgress, batched at the end of a section) are logged after it, as a reader of the
log must see them. Real Postgres, one capture over real gRPC, every call with its role's token.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from oms.capture.v1 import capture_pb2 as pb
from oms.capture.v1 import capture_pb2_grpc
from oms.common.v1 import common_pb2
from oms.events.v1 import events_pb2 as ev
from oms.events.v1 import events_pb2_grpc

from oms_platform import auth
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.registry import start_service
from tests.callers import channel_as
from tests.integration.test_capture_service import isolated_settings, order_request, own_database

# A fulfillment order no lifecycle allocates here waits this long, then is logged anyway.
PARK_MAX_SECONDS = 3.0


@dataclass
class Callers:
    """Capture as the storefront, the lifecycle, fulfillment's relay and an agent reading."""

    storefront: capture_pb2_grpc.CaptureServiceStub
    lifecycle: capture_pb2_grpc.CaptureServiceStub
    fulfillment: capture_pb2_grpc.CaptureServiceStub
    agent: events_pb2_grpc.EventsServiceStub


@pytest.fixture(scope="module")
async def capture(postgres: EmbeddedPostgres) -> AsyncIterator[Callers]:
    dsn = await own_database(postgres, "oms_parked_events_it")
    settings = isolated_settings(dsn, events_park_max_seconds=PARK_MAX_SECONDS)
    running = await start_service("capture", settings, port=0)
    address = f"127.0.0.1:{running.port}"
    channels = [channel_as(settings, address, role) for role in
                (auth.STOREFRONT, auth.WORKFLOW, auth.SERVICE, auth.AGENT)]  # fmt: skip
    try:
        storefront, lifecycle, fulfillment, agent = channels
        yield Callers(
            capture_pb2_grpc.CaptureServiceStub(storefront),
            capture_pb2_grpc.CaptureServiceStub(lifecycle),
            capture_pb2_grpc.CaptureServiceStub(fulfillment),
            events_pb2_grpc.EventsServiceStub(agent),
        )
    finally:
        for channel in channels:
            await channel.close()
        await running.stop(0.5)


def fo_event(order_id: str, fo: str, status: str) -> ev.Event:
    """A fulfillment-order step as fulfillment's relay sends it."""
    at = Timestamp()
    at.GetCurrentTime()
    return ev.Event(
        event_id=f"evt_{fo}_{status}",
        type=f"fulfillment.{status}",
        order_id=order_id,
        occurred_at=at,
        actor="warehouse:wh-east",
        fulfillment_order_changed=ev.FulfillmentOrderChanged(
            fulfillment_order_id=fo, location_id="wh-east", status=status
        ),
    )


def allocation(order_id: str, *fos: str) -> pb.RecordOrderProgressRequest:
    """The lifecycle's routing step: one fulfillment.allocated per fulfillment order."""
    return pb.RecordOrderProgressRequest(
        order_id=order_id,
        idempotency_key=f"allocated:{'+'.join(fos)}",
        status=pb.ORDER_STATUS_ALLOCATED,
        event=common_pb2.TimelineEvent(
            kind="fulfillment.allocated", summary="routed", actor="workflow"
        ),
        events=[
            ev.Event(
                type="fulfillment.allocated",
                fulfillment_order_changed=ev.FulfillmentOrderChanged(
                    fulfillment_order_id=fo, location_id="wh-east", status="allocated"
                ),
            )
            for fo in fos
        ],
    )


async def submitted(capture: Callers) -> str:
    answer = await capture.storefront.SubmitOrder(order_request(email=f"{uuid.uuid4().hex}@x.io"))
    return str(answer.order.order_id)


async def logged(capture: Callers, order_id: str) -> list[tuple[str, str]]:
    """The order's (type, fulfillment order) in log order, as a reader reads them."""
    request = ev.SubscribeEventsRequest(from_sequence=1, order_ids=[order_id], stop_at_head=True)
    return [
        (e.type, e.fulfillment_order_changed.fulfillment_order_id)
        async for response in capture.agent.SubscribeEvents(request, timeout=10)
        for e in response.events
    ]


async def log_once_holds(capture: Callers, order_id: str, count: int) -> list[tuple[str, str]]:
    """The order's log once it holds `count` events (the sequencer numbers them shortly)."""
    deadline = time.monotonic() + 10
    while len(found := await logged(capture, order_id)) < count:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)
    return found


async def test_steps_heard_before_the_allocation_are_logged_after_it_in_their_order(
    capture: Callers,
) -> None:
    order_id = await submitted(capture)
    early = [fo_event(order_id, "fo-a", s) for s in ("accepted", "picked")]
    await capture.fulfillment.RecordOrderEvents(pb.RecordOrderEventsRequest(events=early))
    # Delivered again by a relay that died after delivering: still once.
    await capture.fulfillment.RecordOrderEvents(pb.RecordOrderEventsRequest(events=early[:1]))
    await asyncio.sleep(0.3)  # a sequencer pass or two: nothing of fo-a may show yet
    assert await logged(capture, order_id) == [("order.captured", "")]

    await capture.lifecycle.RecordOrderProgress(allocation(order_id, "fo-a"))
    # Once allocated, a step is logged as it comes.
    packed = fo_event(order_id, "fo-a", "packed")
    await capture.fulfillment.RecordOrderEvents(pb.RecordOrderEventsRequest(events=[packed]))

    assert await log_once_holds(capture, order_id, 5) == [
        ("order.captured", ""),
        ("fulfillment.allocated", "fo-a"),
        ("fulfillment.accepted", "fo-a"),
        ("fulfillment.picked", "fo-a"),
        ("fulfillment.packed", "fo-a"),
    ]
    await asyncio.sleep(PARK_MAX_SECONDS + 0.5)  # nothing left parked to be logged twice
    assert len(await logged(capture, order_id)) == 5


async def test_a_step_behind_a_waiting_one_waits_and_another_fulfillment_order_goes_on(
    capture: Callers,
) -> None:
    order_id = await submitted(capture)
    await capture.lifecycle.RecordOrderProgress(allocation(order_id, "fo-b"))
    await capture.fulfillment.RecordOrderEvents(
        pb.RecordOrderEventsRequest(
            events=[fo_event(order_id, "fo-c", "accepted"), fo_event(order_id, "fo-b", "accepted")]
        )
    )
    assert await log_once_holds(capture, order_id, 3) == [
        ("order.captured", ""),
        ("fulfillment.allocated", "fo-b"),
        ("fulfillment.accepted", "fo-b"),
    ]
    # fo-c is allocated in a later routing step (a replacement), and its steps follow it.
    await capture.lifecycle.RecordOrderProgress(allocation(order_id, "fo-c"))
    assert (await log_once_holds(capture, order_id, 5))[3:] == [
        ("fulfillment.allocated", "fo-c"),
        ("fulfillment.accepted", "fo-c"),
    ]


async def test_a_step_whose_allocation_never_names_it_is_logged_after_the_wait(
    capture: Callers,
) -> None:
    order_id = await submitted(capture)
    steps = [fo_event(order_id, "fo-d", s) for s in ("accepted", "picked")]
    await capture.fulfillment.RecordOrderEvents(pb.RecordOrderEventsRequest(events=steps))
    began = time.monotonic()
    assert await log_once_holds(capture, order_id, 3) == [
        ("order.captured", ""),
        ("fulfillment.accepted", "fo-d"),
        ("fulfillment.picked", "fo-d"),
    ]
    assert time.monotonic() - began >= PARK_MAX_SECONDS - 0.2
