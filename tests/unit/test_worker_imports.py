"""What the worker process imports to run: every module it loads stays resident for its life,
so server-side code it never calls (the services, the tools, gRPC's health and reflection
services, HTTP servers, PDF drawing) has no place in it."""

from __future__ import annotations

import json
import subprocess
import sys

# What `oms worker` runs the worker with (oms_tools/cli/processes.py's cmd_worker), less the
# command line itself.
WORKER_IMPORTS = """
import json, sys
from oms_platform import logging, loop, metrics, settings, temporal, tracing
from workflows.types import order_id_of_workflow
from workflows.worker import run_worker
print(json.dumps(sorted(sys.modules)))
"""

# Packages (or, for gRPC's extras, whose bare package grpc itself touches, their modules)
# the worker never calls.
NEVER_CALLED = (
    "services",
    "oms_tools",
    "grpc_health.v1",
    "grpc_reflection.v1alpha",
    "aiohttp",
    "fpdf",
    "jinja2",
    "holidays",
)


def test_the_worker_loads_no_server_side_code() -> None:
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", WORKER_IMPORTS], check=True, capture_output=True, text=True
        ).stdout
    )
    unwanted = [m for m in loaded if any(m == n or m.startswith(f"{n}.") for n in NEVER_CALLED)]
    assert unwanted == []
    # It does load what it runs on.
    assert {"temporalio.worker", "workflows.lifecycle", "oms_platform.codec"} <= set(loaded)
