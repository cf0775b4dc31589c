"""`oms dev`, `serve`, `worker`, `simulator`, `migrate`, `codec-server`, `codec`, `keys`,
`health`, `temporal`: running and preparing the system's processes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from oms_platform import auth, grpcutil, tracing
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig
from workflows.types import order_id_of_workflow

# ---- processes -----------------------------------------------------------------------------


async def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from oms_tools.devstack.stack import run_dev

    replicas = settings.dev_replicas if args.replicas is None else args.replicas
    if replicas < 1:
        print("error: --replicas (OMS_DEV_REPLICAS) is at least 1", file=sys.stderr)
        return 2
    # Plans with a cadence in minutes make subscriptions demonstrable in a sitting; the dev
    # stack allows them unless OMS_SUBSCRIPTION_MINUTE_CADENCE says otherwise.
    minutes = settings.subscription_minute_cadence or (
        "OMS_SUBSCRIPTION_MINUTE_CADENCE" not in os.environ
    )
    await run_dev(
        replace(
            settings,
            dev_tls=settings.dev_tls or args.tls,
            dev_replicas=replicas,
            subscription_minute_cadence=minutes,
        )
    )
    return 0


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.registry import serve_forever

    tracing.configure(args.service, order_of_workflow=order_id_of_workflow)

    await serve_forever(args.service, settings)
    return 0


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform import metrics, temporal
    from oms_tools.devstack.temporal_server import free_port
    from workflows.worker import run_worker

    tracing.configure("worker", order_of_workflow=order_id_of_workflow)
    runtime = None
    if settings.metrics_port:
        runtime = metrics.temporal_runtime(free_port())
        metrics.serve(settings.metrics_port, settings.metrics_host)
    client = await _retry(lambda: temporal.connect(settings, runtime=runtime), "Temporal")
    try:
        await run_worker(settings, client)
    finally:
        await temporal.close(client)
    return 0


async def cmd_codec_server(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform.codec_server import serve_forever

    await serve_forever(settings)
    return 0


async def cmd_codec(settings: Settings, args: argparse.Namespace) -> int:
    from oms_platform import codec, temporal

    if args.codec_command == "new-key":
        # Printed, not written: the operator puts it first in every process's keys file.
        print(codec.new_key_line(args.id or None))
        return 0
    payload_codec = await temporal.open_codec(settings, cache=False)
    assert payload_codec.vault is not None
    try:
        done = await payload_codec.vault.rewrap()
    finally:
        await payload_codec.vault.close()
    print(f"{done} data keys re-wrapped under master key {payload_codec.keys.active_id}")
    return 0


async def cmd_simulator(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.devstack.simulator import Simulator

    # The warehouse's calls (accept … ship, deliver) root the traces of those events.
    tracing.configure("simulator", order_of_workflow=order_id_of_workflow)
    simulator = Simulator(settings)
    task = asyncio.create_task(simulator.run())
    await _until_signal()
    task.cancel()
    await simulator.close()
    return 0


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from oms_tools.registry import migrate_all

    applied = await migrate_all(settings)
    for name, versions in applied.items():
        print(f"{name}: {', '.join(versions) if versions else 'up to date'}")
    return 0


# What `oms keys init` writes, and the setting that points a process at each file.
KEY_FILES = {
    "issuer.pem": "the dev issuer's signing key: OMS_AUTH_SIGNING_KEY_FILE",
    "jwks.json": "its public key, callers' tokens are verified with: OMS_AUTH_JWKS",
    "internal.secret": "oms processes sign service tokens with it: OMS_INTERNAL_SECRET_FILE",
    "codec.keys": "Temporal payload master keys: OMS_CODEC_KEYS_FILE",
}


async def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """`oms keys init`: the keys a single-host deployment needs, made once and then kept."""
    from pathlib import Path

    from oms_platform import codec

    directory = Path(args.dir) if args.dir else settings.keys_dir
    present = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    # Never replaced: a new codec key would leave every sealed payload unreadable, a new
    # signing key or secret every issued token invalid.
    auth.ensure_dev_keys(directory)
    codec.ensure_keys_file(directory / "codec.keys")
    for name, what in KEY_FILES.items():
        print(f"{directory / name}  {'kept' if name in present else 'created'}  ({what})")
    return 0


async def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """`oms health SERVICE`: exit 0 when the service answers SERVING (container health checks;
    Kubernetes probes gRPC health itself)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = args.address or f"127.0.0.1:{settings.port_of(args.service)}"
    # No token: health checks answer anyone.
    async with grpcutil.channel(address, tls=TLSConfig.from_settings(settings)) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as error:
            print(f"{args.service} at {address}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{args.service} at {address}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


async def cmd_temporal(settings: Settings, args: argparse.Namespace) -> int:
    """`oms temporal search-attributes`: register what the order workflow indexes."""
    from oms_platform import temporal
    from oms_tools.devstack.temporal_server import SEARCH_ATTRIBUTES

    added = await _retry(
        lambda: temporal.register_search_attributes(settings, SEARCH_ATTRIBUTES), "Temporal"
    )
    for name, kind in sorted(SEARCH_ATTRIBUTES.items()):
        print(f"{name} ({kind}): {'added' if name in added else 'already there'}")
    return 0


async def _until_signal() -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _retry(connect: Callable[[], Coroutine[Any, Any, Any]], what: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await connect()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
