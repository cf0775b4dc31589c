"""End to end: `make dev` seals order data in Temporal, starts the codec server and points the
Temporal UI at it, so the UI decodes what the server only holds sealed."""

from __future__ import annotations

import json

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from oms.capture.v1 import capture_pb2_grpc
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client

from oms_platform.samples import sample_order
from tests.e2e.conftest import DevStack, wait_for_status

pytestmark = pytest.mark.e2e


async def ui_codec_settings(stack: DevStack) -> dict[str, object]:
    """The codec settings the dev server's UI runs with (what its browser code reads)."""
    ui = f"http://127.0.0.1:{stack.env['OMS_EMBEDDED_TEMPORAL_UI_PORT']}"
    async with aiohttp.ClientSession() as session, session.get(f"{ui}/api/v1/settings") as r:
        assert r.status == 200
        settings = await r.json(content_type=None)
    codec: dict[str, object] = settings["Codec"]
    return codec


async def test_the_ui_decodes_an_orders_sealed_history_through_the_codec_server(
    stack: DevStack,
) -> None:
    codec_port = stack.env["OMS_CODEC_SERVER_PORT"]
    assert f"http://127.0.0.1:{codec_port}" in stack.banner
    endpoint = str((await ui_codec_settings(stack))["Endpoint"])
    assert endpoint.startswith(f"http://127.0.0.1:{codec_port}/t/")

    request = sample_order(token="tok_visa_e2e_codec")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('capture')}") as channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)
        order_id = (await stub.SubmitOrder(request, timeout=10)).order.order_id
        await wait_for_status(stub, order_id)

    # The server holds the order's history sealed (read without the codec, as the UI gets it).
    raw = await Client.connect(stack.temporal)
    history = await raw.get_workflow_handle(f"order:{order_id}").fetch_history()
    stored = history.to_json()
    assert "tok_visa_e2e_codec" not in stored and "1 Market St" not in stored
    started = history.events[0].workflow_execution_started_event_attributes.input

    # The UI, from its origin, posts the payloads to the endpoint it was given.
    ui_origin = f"http://127.0.0.1:{stack.env['OMS_EMBEDDED_TEMPORAL_UI_PORT']}"
    body = json_format.MessageToJson(started)
    headers = {"Content-Type": "application/json", "Origin": ui_origin, "X-Namespace": "default"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{endpoint}/decode", data=body, headers=headers) as answer:
            assert answer.status == 200
            assert answer.headers["Access-Control-Allow-Origin"] == ui_origin
            decoded = json_format.Parse(await answer.read(), Payloads())
        async with session.post(
            f"http://127.0.0.1:{codec_port}/decode", data=body, headers=headers
        ) as anonymous:
            assert anonymous.status == 401
    [payload] = decoded.payloads
    order = json.loads(payload.data)
    assert order["order_id"] == order_id
    assert "tok_visa_e2e_codec" in payload.data.decode()
    assert "1 Market St" in payload.data.decode()
