"""End to end: `make dev` seals order data in Temporal, starts the codec server and points the
Temporal UI at it, so the UI decodes what the server only holds sealed."""

from __future__ import annotations

import base64
import json
import subprocess

import aiohttp
import pytest
from google.protobuf import json_format
from oms.capture.v1 import capture_pb2_grpc
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client

from oms_platform import codec_server
from oms_tools.samples import sample_order
from tests.e2e.conftest import BIN, DevStack, wait_for_status

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
    async with stack.channel("capture") as channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)
        order_id = (await stub.SubmitOrder(request, timeout=10)).order.order_id
        await wait_for_status(stub, order_id)

    # The server holds the order's history sealed (read without the codec, as the UI gets it).
    raw = await Client.connect(stack.temporal)
    history = await raw.get_workflow_handle(f"order:{order_id}").fetch_history()
    stored = history.to_json()
    for personal in ("tok_visa_e2e_codec", "1 Market St", "ada@example.com", "Ada Lovelace"):
        assert personal not in stored
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


def test_the_temporal_cli_shows_a_decoded_history_with_an_admin_token(stack: DevStack) -> None:
    submitted = stack.cli("order", "submit", "--sample", "--token", "tok_visa_e2e_cli", "--json")
    assert submitted.returncode == 0, submitted.stderr
    order_id = json.loads(submitted.stdout)["order"]["order_id"]
    assert stack.cli("order", "watch", order_id, "--timeout", "90").returncode == 0
    show = [
        str(BIN / "temporal"), "workflow", "show", "--workflow-id", f"order:{order_id}",
        "--address", stack.temporal, "--output", "json",
        "--codec-endpoint", f"http://127.0.0.1:{stack.env['OMS_CODEC_SERVER_PORT']}",
    ]  # fmt: skip

    refused = subprocess.run(show, capture_output=True, text=True, timeout=60)
    admin = codec_server.mint_admin_token(stack.settings, subject="platform-engineer")
    decoded = subprocess.run(
        [*show, "--codec-auth", f"Bearer {admin}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip

    # Without a token the codec server refuses, and the CLI shows nothing of the order.
    assert refused.returncode != 0
    assert "tok_visa_e2e_cli" not in refused.stdout + refused.stderr
    started = json.loads(decoded.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]
    [payload] = started["input"]["payloads"]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert "tok_visa_e2e_cli" in base64.b64decode(payload["data"]).decode()
