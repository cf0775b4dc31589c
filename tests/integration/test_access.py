"""Every role against every RPC of every service, over real gRPC: generated from the access
table and the service descriptors, so an RPC added to a proto is tried here the day it lands.

Requests are empty: an allowed call is answered by the service itself (usually
INVALID_ARGUMENT for the missing fields), a refused one by the gate before any of it runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from oms.capture.v1 import capture_pb2
from oms.events.v1 import events_pb2
from oms.fulfillment.v1 import fulfillment_pb2
from oms.outbox.v1 import outbox_pb2
from oms.payments.v1 import payments_pb2
from oms.servicing.v1 import servicing_pb2
from oms.subscriptions.v1 import subscriptions_pb2

from oms_platform import access, auth
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from tests.callers import caller

DESCRIPTORS = {
    "capture": capture_pb2.DESCRIPTOR.services_by_name["CaptureService"],
    "fulfillment": fulfillment_pb2.DESCRIPTOR.services_by_name["FulfillmentService"],
    "payments": payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"],
    "servicing": servicing_pb2.DESCRIPTOR.services_by_name["ServicingService"],
}
CALLS = [(service, method) for service, d in DESCRIPTORS.items() for method in d.methods]
# Servicing serves SubscriptionsService too.
CALLS += [
    ("servicing", method)
    for method in subscriptions_pb2.DESCRIPTOR.services_by_name["SubscriptionsService"].methods
]
# Every service with an outbox serves OutboxService for it.
CALLS += [
    (service, method)
    for service in ("capture", "fulfillment", "servicing")
    for method in outbox_pb2.DESCRIPTOR.services_by_name["OutboxService"].methods
]
# Capture serves the event log's EventsService.
CALLS += [
    ("capture", method)
    for method in events_pb2.DESCRIPTOR.services_by_name["EventsService"].methods
]
# One identity per role, as narrow as the role allows: a storefront of one channel, a
# warehouse of one location.
IDENTITIES: dict[str, dict[str, Any]] = {
    auth.STOREFRONT: {"channels": ["web"]},
    auth.WAREHOUSE: {"locations": ["wh-east"]},
}


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call(
    channel: grpc.aio.Channel, method: MethodDescriptor, token: str | None
) -> grpc.StatusCode:
    """Call `method` with an empty request (and `token`, if any); the status it ends with."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    metadata = [(auth.METADATA_KEY, f"Bearer {token}")] if token is not None else []
    kind = (method.client_streaming, method.server_streaming)
    try:
        if kind == (False, False):
            rpc: Any = channel.unary_unary(
                path(method), request_class.SerializeToString, response_class.FromString
            )
            await rpc(request_class(), metadata=metadata, timeout=10)
        elif kind == (False, True):
            rpc = channel.unary_stream(
                path(method), request_class.SerializeToString, response_class.FromString
            )
            async for _ in rpc(request_class(), metadata=metadata, timeout=10):
                pass
        else:
            rpc = channel.stream_unary(
                path(method), request_class.SerializeToString, response_class.FromString
            )

            async def nothing() -> AsyncIterator[Any]:
                return
                yield  # an empty stream

            await rpc(nothing(), metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
async def channels(services: dict[str, RunningService]) -> AsyncIterator[dict[str, Any]]:
    opened = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{svc.port}") for name, svc in services.items()
    }
    yield opened
    for channel in opened.values():
        await channel.close()


def tokens(settings: Settings) -> Iterator[tuple[str, str]]:
    for role in sorted(auth.ROLES):
        yield role, caller(settings, role, **IDENTITIES.get(role, {}))()


async def test_every_role_is_allowed_exactly_what_the_table_says_on_every_rpc(
    settings: Settings, channels: dict[str, grpc.aio.Channel]
) -> None:
    wrong: list[str] = []
    # Several calls at once (what each answers does not depend on the others).
    lanes = asyncio.Semaphore(16)

    async def check(role: str, token: str, service: str, method: MethodDescriptor) -> None:
        async with lanes:
            code = await call(channels[service], method, token)
        allowed = role in access.allowed_roles(path(method))
        if allowed and code in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        ):
            wrong.append(f"{role} refused {code.name} on {path(method)}")
        if not allowed and code != grpc.StatusCode.PERMISSION_DENIED:
            wrong.append(f"{role} got {code.name}, not PERMISSION_DENIED, on {path(method)}")

    await asyncio.gather(
        *(
            check(role, token, service, method)
            for role, token in tokens(settings)
            for service, method in CALLS
        )
    )
    assert wrong == []


async def test_a_refusal_names_the_role_and_the_rpc(
    settings: Settings, channels: dict[str, grpc.aio.Channel]
) -> None:
    stub = channels["capture"].unary_unary(
        "/oms.capture.v1.CaptureService/RecordOrderProgress",
        capture_pb2.RecordOrderProgressRequest.SerializeToString,
        capture_pb2.RecordOrderProgressResponse.FromString,
    )
    token = caller(settings, auth.STOREFRONT, channels=["web"])()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub(
            capture_pb2.RecordOrderProgressRequest(order_id="someone-elses"),
            metadata=[(auth.METADATA_KEY, f"Bearer {token}")],
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        "role storefront may not call oms.capture.v1.CaptureService/RecordOrderProgress"
    )


async def test_no_token_an_expired_one_or_another_issuers_is_unauthenticated_everywhere(
    settings: Settings, channels: dict[str, grpc.aio.Channel]
) -> None:
    dev = auth.TokenIssuer.from_settings(settings)
    expired = dev.issue("admin@test", [auth.ADMIN], ttl_seconds=60, now=time.time() - 7200)
    foreign = auth.TokenIssuer("another-idp", dev.audience, dev.key, dev.algorithm, dev.key_id)
    wrong: list[str] = []
    for service, method in CALLS:
        for label, token in [
            ("no token", None),
            ("expired", expired),
            ("other issuer", foreign.issue("admin@test", [auth.ADMIN])),
        ]:
            code = await call(channels[service], method, token)
            if code != grpc.StatusCode.UNAUTHENTICATED:
                wrong.append(f"{label}: {code.name} on {path(method)}")
    assert wrong == []


async def test_health_checks_answer_without_a_token(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    for channel in channels.values():
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_can_be_switched_off_while_health_checks_stay_open(
    settings: Settings,
) -> None:
    from dataclasses import replace

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from oms_tools.registry import start_service

    running = await start_service("payments", replace(settings, grpc_reflection=False), port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            with pytest.raises(grpc.aio.AioRpcError) as off:
                async for _ in replies:
                    pass
    finally:
        await running.stop(0.5)

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
