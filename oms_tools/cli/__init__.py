"""`oms`: run the system, submit and follow orders, play the warehouse, benchmark.

Readable output for people; `--json` for scripts. The grammar is in arguments.py; each command's
module (and what it runs on: the Temporal SDK, the gRPC stubs, asyncpg, the benches) is imported
only when that command runs, so a command starts without the others' imports.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from oms_platform.settings import Settings
from oms_tools.cli.arguments import parser

# Each command's coroutine, as "module:function" under oms_tools.cli.
COMMANDS: dict[str, str] = {
    "dev": "processes:cmd_dev",
    "serve": "processes:cmd_serve",
    "worker": "processes:cmd_worker",
    "simulator": "processes:cmd_simulator",
    "migrate": "processes:cmd_migrate",
    "codec-server": "processes:cmd_codec_server",
    "codec": "processes:cmd_codec",
    "keys": "processes:cmd_keys",
    "health": "processes:cmd_health",
    "temporal": "processes:cmd_temporal",
    "fo": "orders:cmd_fo",
    "bench": "operations:cmd_bench",
    "fuzz": "operations:cmd_fuzz",
    "order:submit": "orders:cmd_order_submit",
    "order:show": "orders:cmd_order_show",
    "order:watch": "orders:cmd_order_watch",
    "order:list": "orders:cmd_order_list",
    "order:late": "orders:cmd_order_late",
    "order:cancel": "servicing:cmd_order_change",
    "order:return": "servicing:cmd_order_change",
    "order:exchange": "servicing:cmd_order_change",
    "order:reship": "servicing:cmd_order_change",
    "order:appease": "servicing:cmd_order_change",
    "order:add-items": "servicing:cmd_order_change",
    "order:change-address": "servicing:cmd_order_change",
    "order:changes": "servicing:cmd_order_changes",
    "return": "servicing:cmd_return",
    "exception": "servicing:cmd_exception",
    "outbox": "operations:cmd_outbox",
    "webhook": "webhooks:cmd_webhook",
    "token": "operations:cmd_token",
    "events": "events:cmd_events",
    "plan": "subscriptions:cmd_plan",
    "subscription": "subscriptions:cmd_subscription",
    "postal": "postal:cmd_postal",
    "supply": "fulfillment:cmd_supply",
    "reservations": "fulfillment:cmd_reservations",
    "transit": "fulfillment:cmd_transit",
}

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def command(key: str) -> Command:
    """The coroutine function of the command `key` (a COMMANDS key), its module imported now."""
    module, _, name = COMMANDS[key].partition(":")
    found: Command = getattr(importlib.import_module(f"oms_tools.cli.{module}"), name)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    settings = Settings.from_env()
    name = args.command
    if name not in ("dev", "serve", "bench"):
        # A caller of the dev stack on this data_dir finds its certificates when it runs TLS.
        from oms_tools.devstack import replicas
        from oms_tools.devstack.certs import dev_client_settings

        settings = replicas.dev_client_settings(dev_client_settings(settings))
    from oms_platform import logging as oms_logging
    from oms_platform.loop import event_loop_factory

    service = args.service if name == "serve" else name
    oms_logging.configure(settings.log_level, settings.log_format, service=service)
    key = f"order:{args.order_command}" if name in ("order", "orders") else name
    run_command = command(key)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
            return runner.run(run_command(settings, args))
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        # Only a command that imported grpc can fail with a gRPC error.
        grpc = sys.modules.get("grpc")
        if grpc is None or not isinstance(error, grpc.aio.AioRpcError):
            raise
        from oms_platform import grpcutil

        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        for field, description in grpcutil.field_violations(error):
            print(f"  {field}: {description}", file=sys.stderr)
        return 1


def run() -> None:
    """The `oms` console script: `main`, then exit at once with its status. Everything the
    command opened is closed by then; skipping interpreter teardown avoids a crash seen there
    when the Temporal SDK's native threads outlive the event loop (an abort, exit -6, after
    the command had succeeded)."""
    code = main()
    # Spans still batched would die with the process (os._exit runs no atexit hook); only a
    # command that imported tracing can have any.
    tracing = sys.modules.get("oms_platform.tracing")
    if tracing is not None:
        tracing.reset()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code or 0)
