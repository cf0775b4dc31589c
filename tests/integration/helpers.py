"""Small helpers integration tests share: polling until something holds, reading an order's
events from capture's log, writing events to it the way its changes do, and listing the local
activities an order's workflow ran."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from oms.events.v1 import events_pb2
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from services.capture.store import events as log
from workflows.types import order_workflow_id

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, seconds: float = 30
) -> T:
    """`probe()` until `ok` holds of its answer."""
    deadline = time.monotonic() + seconds
    while True:
        answer = await probe()
        if ok(answer):
            return answer
        assert time.monotonic() < deadline, f"{what}: still {answer}"
        await asyncio.sleep(0.05)


async def log_changes(conn: Any, *changes: Sequence[events_pb2.Event]) -> None:
    """Write each change's events in a transaction of its own, as capture's changes do, then
    sequence them: until no event is left unsequenced (another sequencer, the service's own,
    may hold the head). `conn` is on capture's schema."""
    for events in changes:
        async with conn.transaction():
            await log.append_events(conn, events)
    while await conn.fetchval("SELECT count(*) FROM order_events WHERE seq IS NULL"):
        await log.sequence_pending(conn)


async def logged_types(events: Any, order_id: str) -> list[str]:
    """The types of the order's events the log holds now, in log order, read through
    SubscribeEvents (an EventsService stub) up to the head."""
    request = events_pb2.SubscribeEventsRequest(
        from_sequence=1, order_ids=[order_id], stop_at_head=True
    )
    return [
        e.type
        async for response in events.SubscribeEvents(request, timeout=10)
        for e in response.events
    ]


async def local_activities(client: Client, order_id: str) -> list[str]:
    """The activity type of every local activity the order's workflow has run, in order."""
    handle = client.get_workflow_handle(order_workflow_id(order_id))
    found = []
    for event in (await handle.fetch_history()).events:
        marker = event.marker_recorded_event_attributes
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and (
            marker.marker_name == "core_local_activity"
        ):
            # The marker's own data, written by the SDK's core (not sealed by the codec).
            found.append(str(json.loads(marker.details["data"].payloads[0].data)["activity_type"]))
    return found
