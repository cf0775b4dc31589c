"""End to end on the stack `make dev` starts: who may do what, with the tokens a real caller
would present (`oms token issue`, grpcurl with an authorization header)."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc
from oms.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc

from oms_platform import auth, grpcutil
from oms_tools.samples import sample_order
from tests.e2e.conftest import BIN, DevStack, wait_for_status

pytestmark = pytest.mark.e2e


def issue(stack: DevStack, *args: str) -> str:
    """`oms token issue …`, as a person would run it."""
    done = stack.cli("token", "issue", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def grpcurl(stack: DevStack, service: str, method: str, body: dict[str, object], token: str = ""):  # type: ignore[no-untyped-def]
    headers = ["-H", f"authorization: Bearer {token}"] if token else []
    return subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", *headers, "-d", json.dumps(body),
         f"127.0.0.1:{stack.port(service)}", method],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


async def test_an_order_submitted_with_a_storefront_token_is_fulfilled(stack: DevStack) -> None:
    token = issue(stack, "--role", "storefront", "--subject", "web-gateway")
    channel = grpcutil.channel(f"127.0.0.1:{stack.port('capture')}", auth.static_token(token))
    async with channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)
        order = (await stub.SubmitOrder(sample_order(), timeout=10)).order
        view = await wait_for_status(stub, order.order_id)
        with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
            await stub.SubmitOrder(sample_order(channel="marketplace"), timeout=10)

    assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED
    assert view.timeline[0].actor == "shopper"
    # A web storefront's token does not reach the marketplace channel.
    assert elsewhere.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "web-gateway acts for channel web" in (elsewhere.value.details() or "")


async def test_a_west_warehouse_cannot_accept_an_east_fulfillment_order(stack: DevStack) -> None:
    async with stack.channel("capture", auth.STOREFRONT) as capture:
        order = (
            await capture_pb2_grpc.CaptureServiceStub(capture).SubmitOrder(
                sample_order(), timeout=10
            )
        ).order
        view = await wait_for_status(capture_pb2_grpc.CaptureServiceStub(capture), order.order_id)
    [fo] = view.fulfillment_orders
    assert fo.location_id == "wh-east"  # Philadelphia ships from Newark
    west = issue(stack, "--role", "warehouse", "--location", "wh-west")
    east = issue(stack, "--role", "warehouse", "--location", "wh-east")

    async def accept(token: str) -> grpc.aio.AioRpcError:
        address = f"127.0.0.1:{stack.port('fulfillment')}"
        async with grpcutil.channel(address, auth.static_token(token)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await fulfillment_pb2_grpc.FulfillmentServiceStub(channel).AcceptFulfillmentOrder(
                    fulfillment_pb2.AcceptFulfillmentOrderRequest(
                        fulfillment_order_id=fo.fulfillment_order_id
                    ),
                    timeout=10,
                )
        return refused.value

    by_west, by_east = await accept(west), await accept(east)

    assert by_west.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "belongs to location wh-east" in (by_west.details() or "")
    # Its own location's order is past accepting (the simulator shipped it): refused for its
    # state, not for who asked.
    assert by_east.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_grpcurl_with_an_issued_token_reads_an_order_and_without_one_is_unauthenticated(
    stack: DevStack,
) -> None:
    token = issue(stack, "--role", "storefront")
    submitted = grpcurl(
        stack,
        "capture",
        "oms.capture.v1.CaptureService/SubmitOrder",
        _sample_json(),
        token,
    )
    assert submitted.returncode == 0, submitted.stderr
    order_id = json.loads(submitted.stdout)["order"]["order_id"]

    read = grpcurl(
        stack, "capture", "oms.capture.v1.CaptureService/GetOrder", {"order_id": order_id}, token
    )
    anonymous = grpcurl(
        stack, "capture", "oms.capture.v1.CaptureService/GetOrder", {"order_id": order_id}
    )

    assert read.returncode == 0 and json.loads(read.stdout)["order"]["order_id"] == order_id
    assert anonymous.returncode != 0
    assert "Unauthenticated" in anonymous.stderr and "no bearer token" in anonymous.stderr


def test_the_cli_signs_its_own_requests_and_a_token_of_another_stack_is_refused(
    stack: DevStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other_keys = auth.ensure_dev_keys(tmp_path_factory.mktemp("other") / "keys")
    settings = stack.settings
    foreign = auth.TokenIssuer.from_settings(type(settings)(data_dir=str(other_keys.parent))).issue(
        "intruder", [auth.ADMIN]
    )

    listed = stack.cli("order", "list", "--json")
    refused = subprocess.run(
        [str(BIN / "oms"), "order", "list"],
        env={**stack.env, "OMS_TOKEN": foreign},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert listed.returncode == 0, listed.stderr
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr and "unknown key id" in refused.stderr


def _sample_json() -> dict[str, object]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(sample_order(), preserving_proto_field_name=True)
