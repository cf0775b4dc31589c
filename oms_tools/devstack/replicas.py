"""Replicas in the dev stack (`oms dev --replicas N`): where each replica of a service listens,
and how its clients (the other services, the worker, the simulator, the CLI) reach them all.

Replica k (from 1) of a service listens on the service's port + REPLICA_PORT_STEP * (k - 1);
every client gets all of them in the service's address (`127.0.0.1:15051,127.0.0.1:15151`),
which `grpcutil.channel` calls round robin, skipping a replica that is down. While the stack
runs, it records those addresses in its data directory, so the CLI in another terminal spreads
its calls the same way.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from oms_platform.settings import SERVICES, Settings

# Far enough apart for the four services' ports (15051-15054) to interleave with none.
REPLICA_PORT_STEP = 100
# The file (in the data directory) naming the replicas' addresses while the stack runs them.
MARKER = "replicas.json"


def ports(settings: Settings, service: str) -> list[int]:
    """The port of each replica of `service`, first to last."""
    base = settings.port_of(service)
    return [base + REPLICA_PORT_STEP * k for k in range(max(1, settings.dev_replicas))]


# The processes serving metrics in the dev stack, in the order of their metrics ports.
METRICS_ROLES = (*SERVICES, "worker")


def metrics_ports(settings: Settings, role: str) -> list[int]:
    """The metrics port of each replica of `role` (a service or the worker); [] when off."""
    if not settings.dev_metrics_port:
        return []
    base = settings.dev_metrics_port + METRICS_ROLES.index(role)
    return [base + REPLICA_PORT_STEP * k for k in range(max(1, settings.dev_replicas))]


def addresses(settings: Settings, service: str) -> str:
    """Every replica of `service`, as one address setting (comma-separated)."""
    return ",".join(f"{settings.host}:{port}" for port in ports(settings, service))


def with_replica_addresses(settings: Settings) -> Settings:
    """`settings` whose service addresses name every replica (unchanged with one replica)."""
    if settings.dev_replicas <= 1:
        return settings
    chosen: dict[str, Any] = {f"{name}_address": addresses(settings, name) for name in SERVICES}
    return replace(settings, **chosen)


def mark_in_use(data_dir: str | Path, settings: Settings | None) -> None:
    """Record the replicas' addresses of the stack on `data_dir` (None: it runs no replicas)."""
    marker = Path(data_dir) / MARKER
    if settings is None or settings.dev_replicas <= 1:
        marker.unlink(missing_ok=True)
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({name: settings.address_of(name) for name in SERVICES}))


def dev_client_settings(settings: Settings) -> Settings:
    """For the CLI: while the dev stack on `settings.data_dir` runs replicas, the addresses of
    the services not configured explicitly name all of them."""
    marker = Path(settings.data_dir) / MARKER
    if not marker.exists():
        return settings
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        return settings
    chosen: dict[str, Any] = {
        f"{name}_address": str(found[name])
        for name in SERVICES
        if name in found and not getattr(settings, f"{name}_address")
    }
    return replace(settings, **chosen)
