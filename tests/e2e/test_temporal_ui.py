"""End to end: the Temporal UI of `make dev`, opened in headless Chromium, shows an order's
summary and details and a summary on each step of its event history (decoded through the codec
server, as an engineer sees them). The README's pictures come from the same script."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from oms.capture.v1 import capture_pb2_grpc

from oms_platform.money import format_minor
from oms_tools.devstack.screenshot import ORDER_PNG, SUMMARY_PNG, chromium_binary, order_pages
from oms_tools.samples import sample_order
from tests.e2e.conftest import DevStack, wait_for_status

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed"),
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, from its header."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_temporal_ui_shows_the_orders_summary_and_what_each_step_did(
    stack: DevStack, tmp_path: Path
) -> None:
    request = sample_order(token="tok_visa_ui_4242", email="ui.check@example.com")
    async with stack.channel("capture") as channel:
        stub = capture_pb2_grpc.CaptureServiceStub(channel)
        order_id = (await stub.SubmitOrder(request, timeout=10)).order.order_id
        await wait_for_status(stub, order_id)

    pages = await order_pages(stack.settings, order_id, tmp_path)

    total = format_minor(request.grand_total.amount_minor, "USD")
    summary, history = pages["user-metadata"], pages["history"]
    # The workflow's page, with the order's summary and details (rendered from Markdown).
    assert f"order:{order_id}" in summary.dom
    assert f"Order {request.channel_order_ref} · web · {total}" in summary.text
    assert "2 x SKU-TSHIRT-M" in summary.text and "Paid by card …4242" in summary.text
    # Its event history: each step (a local activity) with what it did for this order.
    assert f"order:{order_id}" in history.dom
    steps = history.text.replace("\n", " ")
    assert f"Activity Type authorize_payment Summary authorize {total} on card …4242" in " ".join(
        steps.split()
    )
    assert "invoice 3 shipped unit(s) of " in steps and " and capture it" in steps
    assert "record order.fulfilled → fulfilled" in steps
    for png in (ORDER_PNG, SUMMARY_PNG):
        width, height = png_size(tmp_path / png)
        assert width >= 1200 and height >= 800
