"""`oms events tail`: the event log, one line per event (or JSON lines), from a sequence or a
time, filtered by type, channel and order; following new events, or stopping at the head."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime

import grpc
from google.protobuf.json_format import MessageToDict
from oms.events.v1 import events_pb2, events_pb2_grpc

from oms_platform import auth
from oms_platform.settings import Settings
from oms_tools.cli.common import money_text
from oms_tools.cli.orders import caller_token, service_channel

# Pause before following again after capture went away (a restart, a replica leaving).
RECONNECT_SECONDS = 1.0


def _request(args: argparse.Namespace, from_sequence: int) -> events_pb2.SubscribeEventsRequest:
    request = events_pb2.SubscribeEventsRequest(
        from_sequence=from_sequence,
        types=args.types,
        channels=args.channels,
        order_ids=args.order_ids,
        stop_at_head=not args.follow,
    )
    if args.from_time and not from_sequence:
        request.from_time.FromDatetime(datetime.fromisoformat(args.from_time))
    return request


async def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    """Print the log's events; with --follow, resume after the last one seen whenever the
    stream ends or capture goes away."""
    channel = service_channel(settings, "capture", caller_token(settings, auth.AGENT))
    stub = events_pb2_grpc.EventsServiceStub(channel)
    # A script reading what the log holds starts at its beginning.
    next_sequence = args.from_sequence or (1 if not args.follow and not args.from_time else 0)
    async with channel:
        while True:
            try:
                async for response in stub.SubscribeEvents(_request(args, next_sequence)):
                    for event in response.events:
                        _print(event, args.json)
                    if response.head_sequence:
                        next_sequence = response.head_sequence + 1
            except grpc.aio.AioRpcError as error:
                if not args.follow or error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            if not args.follow:
                return 0
            # The stream's time was up: go on from where it stopped.


def _print(event: events_pb2.Event, as_json: bool) -> None:
    if as_json:
        print(json.dumps(MessageToDict(event, preserving_proto_field_name=True)), flush=True)
        return
    at = event.occurred_at.ToDatetime()
    print(
        f"{event.sequence:>8}  {at:%Y-%m-%d %H:%M:%S}  {event.type:<26} {event.order_id}  "
        f"{payload_text(event)}",
        flush=True,
    )


def payload_text(event: events_pb2.Event) -> str:
    """A short rendering of an event's payload."""
    kind = event.WhichOneof("payload")
    if kind is None:
        return ""
    payload = getattr(event, kind)
    parts = []
    for field, value in payload.ListFields():
        if field.message_type is not None and field.message_type.name == "Money":
            parts.append(f"{field.name}={money_text(value)}")
        elif field.message_type is not None and field.message_type.name == "LineQuantity":
            parts.append(f"{field.name}=" + ",".join(f"{x.sku}x{x.quantity}" for x in value))
        elif isinstance(value, str | int | float | bool):
            parts.append(f"{field.name}={value}")
        else:  # a repeated scalar (fraud reasons)
            parts.append(f"{field.name}=" + ",".join(str(v) for v in value))
    return " ".join(parts)
