"""Issue 12: `oms dev` supervises the servers it starts. Postgres' postmaster and then Temporal's
dev server are killed (SIGKILL); the stack reaps each, logs it, starts it again on the same
port and data, and the services and the worker, never restarted, carry on: an order submitted
afterwards runs its whole lifecycle."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_tools.samples import sample_order
from tests.e2e.conftest import DevStack, running, wait_for_status

pytestmark = pytest.mark.e2e


def stack_children(dev: DevStack) -> dict[str, int]:
    """pid of each process `oms dev` started, by what it runs."""
    assert dev.process is not None
    found: dict[str, int] = {}
    for child in psutil.Process(dev.process.pid).children():
        try:
            cmdline = child.cmdline()
        except psutil.Error:  # gone, or a zombie until the stack reaps it
            continue
        if not cmdline:  # exiting
            continue
        if "start-dev" in cmdline:
            found["temporal"] = child.pid
        elif Path(cmdline[0]).name == "postgres":
            found["postgres"] = child.pid
        elif "oms_tools.cli" in cmdline:
            found[cmdline[-1]] = child.pid
    return found


def kill_and_wait_for_restart(dev: DevStack, name: str, within: float = 30.0) -> int:
    """SIGKILL the stack's `name` server; returns the pid of the one the stack starts again."""
    old = stack_children(dev)[name]
    psutil.Process(old).send_signal(signal.SIGKILL)
    deadline = time.monotonic() + within
    while True:
        new = stack_children(dev).get(name)
        restarted = dev.events("process restarted", name)
        if new is not None and new != old and restarted:
            break
        assert time.monotonic() < deadline, f"{name} not restarted within {within}s"
        time.sleep(0.1)
    assert not psutil.pid_exists(old) or psutil.Process(old).status() != psutil.STATUS_ZOMBIE
    # The first death is the kill (a restart that fails, e.g. while old backends linger,
    # would add more, each with a longer delay).
    exited = dev.events("process exited", name)[0]
    assert exited["pid"] == old and exited["code"] == -9 and exited["signal"] == "SIGKILL"
    assert exited["restart_in_seconds"] > 0
    assert restarted[-1]["pid"] == new
    return new


async def accepting_connections(dsn: str, within: float = 30.0) -> None:
    """Wait until Postgres has finished its crash recovery and takes connections."""
    deadline = time.monotonic() + within
    while True:
        try:
            connection = await asyncpg.connect(dsn, timeout=2)
        except (OSError, asyncpg.PostgresError):
            assert time.monotonic() < deadline, f"postgres not back within {within}s"
            await asyncio.sleep(0.1)
            continue
        await connection.close()
        return


async def test_killed_postgres_and_temporal_are_restarted_and_orders_still_complete(
    tmp_path: Path,
) -> None:
    with running(DevStack(tmp_path)) as dev:
        before = stack_children(dev)
        assert {"postgres", "temporal", "capture", "worker"} <= before.keys()
        async with dev.channel("capture") as channel:
            capture = capture_pb2_grpc.CaptureServiceStub(channel)
            first = await capture.SubmitOrder(sample_order(), timeout=10)

            kill_and_wait_for_restart(dev, "postgres")
            await accepting_connections(dev.settings.dsn)
            # The same cluster came back: what was committed before the kill is there.
            seen = await capture.GetOrder(
                capture_pb2.GetOrderRequest(order_id=first.order.order_id), timeout=10
            )
            assert seen.order.order_id == first.order.order_id

            kill_and_wait_for_restart(dev, "temporal")
            second = await capture.SubmitOrder(sample_order(), timeout=10)
            for order_id in (first.order.order_id, second.order.order_id):
                view = await wait_for_status(capture, order_id, within=45)
                assert view.order.status == capture_pb2.ORDER_STATUS_FULFILLED

        # The services, the worker and the rest reconnected; none of them had to restart.
        after = stack_children(dev)
        assert {k: v for k, v in after.items() if k not in ("postgres", "temporal")} == {
            k: v for k, v in before.items() if k not in ("postgres", "temporal")
        }
