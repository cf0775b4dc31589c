"""SubscribeEvents: the log followed over gRPC. A stream reads the history from where the caller
asked, a page at a time, then waits for the sequencer's NOTIFY of a new head (one listener per
process fans out to every stream, as WatchOrder's hub does) and reads what is new.

Back-pressure: a page is read only after the previous one has been handed to gRPC, which waits
on the stream's flow control, so a slow reader holds at most one page in this process and no
pool connection while it reads. Every replica reads the same sequenced rows, so every replica
serves the same stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from oms.events.v1 import events_pb2

from oms_platform import auth, listen, metrics
from oms_platform.errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)
from oms_platform.listen import Listener, StreamHub
from services.capture import domain
from services.capture.domain import events as vocabulary
from services.capture.store import events as event_log

# Orders one subscription may name.
MAX_ORDER_IDS = 1000


class LogHub(StreamHub):
    """SubscribeEvents streams, woken together whenever the sequencer moves the head."""

    def __init__(self, listener: Listener, max_streams: int) -> None:
        super().__init__(
            listener,
            event_log.EVENTS_SEQUENCED_CHANNEL,
            what="SubscribeEvents",
            max_streams=max_streams,
            keyed=False,
            on_count=metrics.EVENT_STREAMS_OPEN.set,
        )


@dataclasses.dataclass(frozen=True)
class Subscription:
    """Where a stream starts (a sequence, a time, or neither: the next event) and what it
    carries."""

    from_sequence: int
    from_time: datetime | None
    where: event_log.LogFilter
    # End at the head as it stood when the stream started, rather than follow.
    stop_at_head: bool = False


def subscription_from_pb(request: events_pb2.SubscribeEventsRequest) -> Subscription:
    """The request, validated, with a storefront held to its own channels."""
    violations = []
    if request.from_sequence < 0:
        violations.append(FieldViolation("from_sequence", "must be 1 or more (or 0: not set)"))
    if request.from_sequence and request.HasField("from_time"):
        violations.append(FieldViolation("from_time", "give from_sequence or from_time, not both"))
    for i, wanted in enumerate(request.types):
        problem = vocabulary.filter_problem(wanted)
        if problem:
            violations.append(FieldViolation(f"types[{i}]", problem))
    for i, channel in enumerate(request.channels):
        if channel not in domain.CHANNELS:
            violations.append(
                FieldViolation(f"channels[{i}]", f"must be one of {', '.join(domain.CHANNELS)}")
            )
    if len(request.order_ids) > MAX_ORDER_IDS:
        violations.append(
            FieldViolation("order_ids", f"at most {MAX_ORDER_IDS} orders per subscription")
        )
    if violations:
        raise InvalidArgument(violations)
    from_time = request.from_time.ToDatetime(tzinfo=UTC) if request.HasField("from_time") else None
    return Subscription(
        request.from_sequence,
        from_time,
        event_log.LogFilter(
            types=tuple(request.types),
            channels=_own_channels(list(request.channels)),
            order_ids=tuple(request.order_ids),
        ),
        request.stop_at_head,
    )


def _own_channels(asked: list[str]) -> tuple[str, ...]:
    """The channels a caller follows: those it asked for; a storefront only its own (all of
    them when it names none)."""
    principal = auth.current_principal()
    if principal.sees_every_channel():
        return tuple(asked)
    mine = sorted(principal.channels)
    others = sorted(set(asked) - set(mine))
    if others or not mine:
        raise PermissionDenied(
            f"{principal.subject} follows only its own channels' events "
            f"({', '.join(mine) or 'no channel'}); {', '.join(others) or 'none'} is not one"
        )
    return tuple(asked or mine)


@dataclasses.dataclass(frozen=True)
class StreamLimits:
    """How a stream pages, when it sends a heartbeat, and how long it lasts."""

    page_size: int
    heartbeat_seconds: float
    max_seconds: float


async def follow(
    pool: asyncpg.Pool, hub: LogHub, subscription: Subscription, limits: StreamLimits
) -> AsyncIterator[events_pb2.SubscribeEventsResponse]:
    """The subscription's events in sequence order: history first, then as they are
    sequenced; a heartbeat with the head after `heartbeat_seconds` with nothing sent."""
    loop = asyncio.get_running_loop()
    where = subscription.where
    # Subscribed before the first read, so nothing sequenced in between is missed.
    with hub.subscribe() as woken:
        async with pool.acquire() as conn:
            if subscription.from_sequence:
                next_seq = subscription.from_sequence
            elif subscription.from_time is not None:
                next_seq = await event_log.first_sequence_at(conn, subscription.from_time)
            else:
                next_seq = await event_log.head(conn) + 1
            stop_at = await event_log.head(conn) if subscription.stop_at_head else None
        ends_at = loop.time() + limits.max_seconds
        sent_at = loop.time()
        while loop.time() < ends_at:
            woken.clear()
            async with pool.acquire() as conn:
                head = await event_log.head(conn)
                if stop_at is not None:
                    head = min(head, stop_at)
                events = (
                    await event_log.read_events(conn, next_seq, head, where, limits.page_size)
                    if head >= next_seq
                    else []
                )
            if events:
                # A full page may stop short of the head: resume after its last event.
                looked = events[-1].sequence if len(events) >= limits.page_size else head
                next_seq = looked + 1
                yield events_pb2.SubscribeEventsResponse(events=events, head_sequence=looked)
                sent_at = loop.time()
                continue
            next_seq = max(next_seq, head + 1)
            if stop_at is not None:  # everything up to where it started is sent: the end
                yield events_pb2.SubscribeEventsResponse(head_sequence=stop_at)
                return
            if loop.time() - sent_at >= limits.heartbeat_seconds:
                yield events_pb2.SubscribeEventsResponse(head_sequence=next_seq - 1)
                sent_at = loop.time()
            wait = min(ends_at, sent_at + limits.heartbeat_seconds) - loop.time()
            await listen.woken(woken, wait)
