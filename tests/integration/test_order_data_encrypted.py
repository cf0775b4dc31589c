"""Order data is unreadable in Temporal: an order run through the whole system leaves no
personal data in clear in its history on the server; the codec server decodes it for an admin;
after the order's data key is shredded, nothing of it decodes any more."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import jwt
import pytest
from google.protobuf import json_format
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowHistory

from oms_platform import codec_server, temporal
from oms_platform.auth import AGENT, TokenIssuer
from oms_platform.codec import ENCODING
from oms_tools.devstack.temporal_server import SEARCH_ATTRIBUTES
from oms_tools.samples import sample_order
from tests.conftest import System
from tests.history import record


def personal_order() -> tuple[capture_pb2.SubmitOrderRequest, list[str]]:
    """A sample order whose personal data is unique to this test, and that data."""
    tag = uuid.uuid4().hex[:10]
    request = sample_order(email=f"ada.{tag}@example.com", token=f"tok_visa_{tag}")
    request.shopper.phone = f"+1-215-555-{tag[:4]}"
    request.delivery_groups[0].address.line1 = f"{tag} Market St"
    personal = [
        request.shopper.email,
        request.shopper.phone,
        request.delivery_groups[0].address.line1,
        request.payment_method.token,
    ]
    return request, personal


async def fulfilled(stub: capture_pb2_grpc.CaptureServiceStub, order_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        if view.order.status == capture_pb2.ORDER_STATUS_FULFILLED:
            return
        assert time.monotonic() < deadline, f"order stuck in {view.order.status}"
        await asyncio.sleep(0.1)


def payloads_of(history: WorkflowHistory) -> list[Payload]:
    """Every payload anywhere in the history's events."""
    found: list[Payload] = []

    def walk(message: Any) -> None:
        if isinstance(message, Payload):
            found.append(message)
            return
        for descriptor, value in message.ListFields():
            if descriptor.message_type is None:
                continue
            if descriptor.message_type.GetOptions().map_entry:
                for item in value.values():
                    if not isinstance(item, bytes | str):
                        walk(item)
            elif descriptor.is_repeated:
                for item in value:
                    walk(item)
            else:
                walk(value)

    for event in history.events:
        walk(event)
    return found


@pytest.fixture(scope="module")
async def codec_endpoint(system: System) -> AsyncIterator[tuple[str, Any]]:
    """The codec server on a free port, and the settings its tokens are minted with."""
    settings = replace(system.settings, codec_server_cors_origins="http://ui.test")
    runner, port = await codec_server.start(settings, port=0)
    try:
        yield f"http://127.0.0.1:{port}", settings
    finally:
        await runner.cleanup()


async def decode(
    url: str, payloads: list[Payload], headers: dict[str, str]
) -> aiohttp.ClientResponse:
    body = json_format.MessageToJson(Payloads(payloads=payloads))
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            url, data=body, headers={"Content-Type": "application/json", **headers}
        )
        await response.read()
        return response


def decoded_text(body: bytes) -> str:
    """The data of every payload in a codec server answer, as text."""
    answer = json_format.Parse(body, Payloads())
    return "\n".join(p.data.decode(errors="replace") for p in answer.payloads)


async def test_an_orders_history_on_the_server_holds_no_personal_data_in_clear(
    system: System, codec_endpoint: tuple[str, Any]
) -> None:
    url, settings = codec_endpoint
    request, personal = personal_order()
    stub = capture_pb2_grpc.CaptureServiceStub(system.channel("capture"))
    async with system.simulator():
        order_id = (await stub.SubmitOrder(request, timeout=10)).order.order_id
        await fulfilled(stub, order_id)
    workflow_id = f"order:{order_id}"

    # What anyone with access to the Temporal server (or its UI) sees: a client WITHOUT the codec.
    raw = await Client.connect(system.settings.temporal_target)
    history = await raw.get_workflow_handle(workflow_id).fetch_history()
    stored = history.to_json() + "".join(e.SerializeToString().hex() for e in history.events)
    for value in personal:
        assert value not in stored
        assert value.encode().hex() not in stored
    payloads = payloads_of(history)
    sealed = [p for p in payloads if p.metadata.get("encoding") == ENCODING]
    assert len(sealed) > 10, "the lifecycle's inputs and results are sealed"
    assert {p.metadata["encryption-subject"] for p in sealed} == {workflow_id.encode()}
    # Search attributes are indexed in clear: the lifecycle sets only oms' own (status, channel,
    # total, currency, on hold, locations; none personal, the values were checked above). No
    # TemporalChangeVersion: capture starts the run at the current baseline, which folds in
    # every patch (workflows/versions.py), so the SDK upserts none.
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    at_start = history.events[0].workflow_execution_started_event_attributes.search_attributes
    upserted = {name for attributes in upserts for name in attributes.indexed_fields}
    assert upserted | set(at_start.indexed_fields) == set(SEARCH_ATTRIBUTES)

    vault = temporal.codec_of(system.client).vault
    await record(system.client.get_workflow_handle(workflow_id), "encrypted_happy_path", vault)

    # An admin reads it through the codec server, by header or by the UI's path token.
    admin = codec_server.mint_admin_token(settings, subject="alice")
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    answer = await decode(f"{url}/decode", [started], {"Authorization": f"Bearer {admin}"})
    address, token = request.delivery_groups[0].address.line1, request.payment_method.token
    assert answer.status == 200
    assert address in decoded_text(await answer.read())
    answer = await decode(f"{url}/t/{admin}/decode", sealed, {})
    assert answer.status == 200
    text = decoded_text(await answer.read())
    # The lifecycle carries the address and payment token (not the shopper's email or phone).
    assert address in text and token in text

    # Nobody else does.
    assert (await decode(f"{url}/decode", [started], {})).status == 401
    forged = jwt.encode(
        {"iss": settings.auth_issuer, "sub": "mallory", "roles": ["admin"], "aud": "oms",
         "exp": int(time.time()) + 60},
        "a key that is not ours, however long it is",
        algorithm="HS256",
    )  # fmt: skip
    agent = TokenIssuer.from_settings(settings).issue("bob", [AGENT])
    for bearer, status in [(forged, 401), (agent, 403)]:
        answer = await decode(f"{url}/decode", [started], {"Authorization": f"Bearer {bearer}"})
        assert answer.status == status

    # Erased: the order's data key is destroyed, and the codec server decodes nothing of it.
    await system.client.get_workflow_handle(workflow_id).terminate("erased for the test")
    assert vault is not None
    await vault.shred([workflow_id])
    answer = await decode(f"{url}/decode", sealed, {"Authorization": f"Bearer {admin}"})
    assert answer.status == 200
    returned = json_format.Parse(await answer.read(), Payloads()).payloads
    assert all(p.metadata["encoding"] == ENCODING for p in returned)
    text = decoded_text(await answer.read())
    for value in personal:
        assert value not in text


async def test_the_codec_server_answers_the_temporal_uis_preflight_from_its_origin_only(
    codec_endpoint: tuple[str, Any],
) -> None:
    url, _ = codec_endpoint
    headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    async with aiohttp.ClientSession() as session:
        ui = await session.options(f"{url}/decode", headers={"Origin": "http://ui.test", **headers})
        other = await session.options(
            f"{url}/decode", headers={"Origin": "http://evil.test", **headers}
        )
    assert ui.status == 204
    assert ui.headers["Access-Control-Allow-Origin"] == "http://ui.test"
    assert "x-namespace" in ui.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Origin" not in other.headers
