"""The commands containers run beside the services: `oms health` (compose health checks) and
`oms temporal search-attributes` (preparing a Temporal namespace)."""

from __future__ import annotations

import asyncio
import os
import sys

from grpc_health.v1 import health_pb2
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from oms_platform import temporal
from oms_platform.service import RunningService
from oms_platform.settings import Settings
from oms_tools.devstack.temporal_server import SEARCH_ATTRIBUTES, free_port


async def oms(*args: str, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "oms_tools.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_health_follows_what_the_service_reports(services: dict[str, RunningService]) -> None:
    capture = services["capture"]
    address = f"127.0.0.1:{capture.port}"
    code, out = await oms("health", "capture", "--address", address)
    assert (code, out.strip()) == (0, f"capture at {address}: SERVING")
    await capture.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        code, out = await oms("health", "capture", "--address", address)
        assert code == 1 and "NOT_SERVING" in out
    finally:
        await capture.health.set("", health_pb2.HealthCheckResponse.SERVING)


async def test_health_fails_where_nothing_listens() -> None:
    code, out = await oms("health", "payments", "--address", f"127.0.0.1:{free_port()}")
    assert code == 1 and "UNAVAILABLE" in out


async def test_search_attributes_are_added_once(settings_with_temporal: Settings) -> None:
    wanted = {"OrderStatus": "Keyword", "OmsDeployProbe": "KeywordList"}
    assert await temporal.register_search_attributes(settings_with_temporal, wanted) == [
        "OmsDeployProbe"
    ]
    assert await temporal.register_search_attributes(settings_with_temporal, wanted) == []
    client = await Client.connect(settings_with_temporal.temporal_target)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=settings_with_temporal.temporal_namespace)
    )
    assert (
        listed.custom_attributes["OmsDeployProbe"]
        == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST
    )


async def test_the_command_registers_what_the_workflow_sets(
    settings_with_temporal: Settings,
) -> None:
    code, out = await oms(
        "temporal",
        "search-attributes",
        OMS_TEMPORAL_ADDRESS=settings_with_temporal.temporal_target,
    )
    assert code == 0, out
    # The test server registered them at start, as `oms dev` does.
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert f"{name} ({kind}): already there" in out
