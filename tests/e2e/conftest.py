"""The dev stack, started once per test session exactly as `make dev` starts it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform.settings import SERVICES, Settings
from oms_tools.devstack.replicas import METRICS_ROLES, REPLICA_PORT_STEP
from oms_tools.devstack.replicas import addresses as replica_addresses
from oms_tools.devstack.temporal_server import free_port, is_free
from tests.callers import channel_as, persona_channel

BIN = Path(sys.executable).parent


class _Ports:
    """Every port one dev stack is given, from one allocator: a port (or a block of ports at
    fixed offsets from a base) is free on the machine and not already handed to this stack.
    Picking each port on its own let the embedded Postgres get a port that was also one of
    the worker's metrics ports (base + offset), and the worker restarted in a loop."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def block(self, offsets: Iterable[int] = (0,)) -> int:
        wanted = sorted(set(offsets))
        while True:
            base = free_port()
            ports = [base + offset for offset in wanted]
            if self.taken.isdisjoint(ports) and all(is_free(p) for p in ports):
                self.taken.update(ports)
                return base

    def one(self) -> int:
        return self.block()

    def metrics(self, replicas: int) -> int:
        """The base of the metrics ports (capture … worker, each replica;
        devstack/replicas.py)."""
        roles = range(len(METRICS_ROLES))
        return self.block(r + REPLICA_PORT_STEP * k for r in roles for k in range(replicas))

    def service(self, replicas: int) -> int:
        """A service's port, its replicas' ports at REPLICA_PORT_STEP apart."""
        return self.block(REPLICA_PORT_STEP * k for k in range(replicas))


class DevStack:
    """`oms dev` as a child process with its own data directory and ports; `replicas` of each
    service and worker (`oms dev --replicas`), and `env` overriding settings."""

    def __init__(self, data_dir: Path, replicas: int = 1, **env: str) -> None:
        ports = _Ports()
        self.env = {
            **os.environ,
            "OMS_DATA_DIR": str(data_dir),
            "OMS_EMBEDDED_POSTGRES_PORT": str(ports.one()),
            "OMS_EMBEDDED_TEMPORAL_PORT": str(ports.one()),
            "OMS_EMBEDDED_TEMPORAL_UI_PORT": str(ports.one()),
            "OMS_CODEC_SERVER_PORT": str(ports.one()),
            "OMS_SMTP_PORT": str(ports.one()),
            "OMS_SIMULATOR_STEP_SECONDS": "0.2",
            "OMS_SIMULATOR_POLL_SECONDS": "0.1",
            "OMS_OUTBOX_POLL_SECONDS": "0.1",
            "OMS_DEV_LOAD_POSTAL_CODES": "false",
            # Subscriptions with a one-minute cadence, each due on the second it names.
            "OMS_SUBSCRIPTION_MINUTE_CADENCE": "true",
            "OMS_SUBSCRIPTION_SPREAD_SECONDS": "0",
            # The simulated gateways append every operation they perform here (read it with
            # services.payments.sim_store.read_operation_log).
            "OMS_GATEWAY_LOG_PATH": str(data_dir / "gateway.jsonl"),
            **{f"OMS_{name.upper()}_PORT": str(ports.service(replicas)) for name in SERVICES},
            "OMS_DEV_REPLICAS": str(replicas),
            "OMS_DEV_METRICS_PORT": str(ports.metrics(replicas)),
            **env,
        }
        unset = ("DATABASE_URL", "TEMPORAL_ADDRESS", "CODEC_KEYS_FILE", "CODEC_SERVER_CORS_ORIGINS")
        for name in unset:
            self.env.pop(f"OMS_{name}", None)
        self.process: subprocess.Popen[str] | None = None
        self.banner = ""
        self.output: list[str] = []

    @property
    def gateway_log(self) -> Path:
        """The simulated gateways' log of every operation performed, across the session."""
        return Path(self.env["OMS_GATEWAY_LOG_PATH"])

    @property
    def settings(self) -> Settings:
        """The stack's settings, as its processes read them (its own keys among them)."""
        return Settings.from_env(env=self.env)

    def channel(self, service: str, role: str = "", **identity: object) -> grpc.aio.Channel:
        """A channel to one of the stack's services (all its replicas, round robin) as `role`
        (per RPC persona if none)."""
        address = replica_addresses(self.settings, service)
        if role:
            return channel_as(self.settings, address, role, **identity)
        return persona_channel(self.settings, address)

    def port(self, service: str) -> int:
        """The port of the service's (first) replica."""
        return int(self.env[f"OMS_{service.upper()}_PORT"])

    @property
    def temporal(self) -> str:
        return f"127.0.0.1:{self.env['OMS_EMBEDDED_TEMPORAL_PORT']}"

    def start(self, timeout: float = 120.0) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "oms"), "dev"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError("oms dev exited:\n" + "".join(lines))
            lines.append(line)
            if "stop: Ctrl-C" in line:
                self.banner = "".join(lines)
                # Keep reading what the stack logs (its supervision), so the pipe never fills
                # and blocks it, and so tests can look.
                threading.Thread(target=self._drain, daemon=True, name="oms-dev-output").start()
                return
        raise TimeoutError("oms dev printed no banner:\n" + "".join(lines))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def logged(self, *words: str) -> list[str]:
        """What the stack logged after its banner, the lines containing every one of `words`."""
        return [line for line in list(self.output) if all(word in line for word in words)]

    def events(self, event: str, process: str = "") -> list[dict[str, Any]]:
        """The stack's own log records `event` (about `process` when given): the JSON lines it
        logs when not on a terminal."""
        records = []
        for line in self.logged(event, process):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event and process in ("", record.get("process")):
                records.append(record)
        return records

    def stop(self) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "oms"), *args], env=self.env, capture_output=True, text=True, timeout=120
        )


def _is_oms_role(role: str) -> Callable[[psutil.Process], bool]:
    def match(p: psutil.Process) -> bool:
        cmdline = p.cmdline()
        return "oms_tools.cli" in cmdline and cmdline[-1] == role

    return match


def _is_postmaster(p: psutil.Process) -> bool:
    return p.name() == "postgres" and p.parent() is not None and p.parent().name() != "postgres"


def _is_temporal(p: psutil.Process) -> bool:
    return p.name().startswith("temporal") and "server" in p.cmdline()


def _finder(role: str) -> Callable[[psutil.Process], bool]:
    if role == "postgres":
        return _is_postmaster
    if role == "temporal":
        return _is_temporal
    return _is_oms_role(role)  # a service ("payments"), "worker", "simulator"


def pid_of(stack: DevStack, role: str) -> int | None:
    """The pid of the stack's live process playing `role` (one replica of it when it runs
    several): "postgres", "temporal", a service name, "worker" or "simulator"; None while the
    stack restarts it."""
    assert stack.process is not None
    plays = _finder(role)
    for child in psutil.Process(stack.process.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and plays(child):
                return int(child.pid)
        except psutil.NoSuchProcess:  # went away while we looked (zombies too)
            continue
    return None


def kill(stack: DevStack, role: str) -> int:
    """SIGKILL the stack's process playing `role` (see `pid_of`); returns its pid."""
    pid = pid_of(stack, role)
    assert pid is not None, f"no {role} process under oms dev"
    os.kill(pid, signal.SIGKILL)
    return pid


# What a storefront retries (with the same request, so the same idempotency key).
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


async def submit_with_retries(
    stub: capture_pb2_grpc.CaptureServiceStub,
    request: capture_pb2.SubmitOrderRequest,
    codes: collections.Counter[str],
) -> str:
    """What a storefront does: retry UNAVAILABLE (and timeouts) with the same key; counts the
    codes it saw in `codes`."""
    delay = 0.2
    give_up = time.monotonic() + 180
    while True:
        try:
            response = await stub.SubmitOrder(request, timeout=10)
            codes["OK"] += 1
            return response.order.order_id
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1
            assert error.code() in RETRYABLE, f"{error.code().name}: {error.details()}"
            assert time.monotonic() < give_up, f"still {error.code().name} after 3 minutes"
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)


@contextlib.contextmanager
def running(dev: DevStack) -> Iterator[DevStack]:
    """`dev` started, and stopped (Ctrl-C) when the block ends unless a test stopped it."""
    dev.start()
    try:
        yield dev
    finally:
        if dev.process is not None and dev.process.poll() is None:
            dev.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with running(DevStack(tmp_path_factory.mktemp("dev"))) as dev:
        yield dev


async def wait_for_status(
    stub: capture_pb2_grpc.CaptureServiceStub, order_id: str, within: float = 90.0
) -> capture_pb2.GetOrderResponse:
    deadline = time.monotonic() + within
    while True:
        view = await stub.GetOrder(capture_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        settled = {capture_pb2.ORDER_STATUS_FULFILLED, capture_pb2.ORDER_STATUS_CANCELED}
        if view.order.status in settled and not view.missing_sections:
            return view
        assert time.monotonic() < deadline, f"order still {view.order.status}"
        await asyncio.sleep(0.2)
