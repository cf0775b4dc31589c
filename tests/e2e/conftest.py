"""The dev stack, started once per test session exactly as `make dev` starts it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from oms.capture.v1 import capture_pb2, capture_pb2_grpc

from oms_platform.devstack.temporal_server import free_port
from oms_platform.settings import SERVICES, Settings
from tests.callers import channel_as, persona_channel

BIN = Path(sys.executable).parent


class DevStack:
    """`oms dev` as a child process with its own data directory and ports."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {
            **os.environ,
            "OMS_DATA_DIR": str(data_dir),
            "OMS_EMBEDDED_POSTGRES_PORT": str(free_port()),
            "OMS_EMBEDDED_TEMPORAL_PORT": str(free_port()),
            "OMS_EMBEDDED_TEMPORAL_UI_PORT": str(free_port()),
            "OMS_CODEC_SERVER_PORT": str(free_port()),
            "OMS_SIMULATOR_STEP_SECONDS": "0.2",
            "OMS_SIMULATOR_POLL_SECONDS": "0.1",
            "OMS_OUTBOX_POLL_SECONDS": "0.1",
            # The simulated gateways append every operation they perform here (read it with
            # services.payments.gateway.read_operation_log).
            "OMS_GATEWAY_LOG_PATH": str(data_dir / "gateway.jsonl"),
            **{f"OMS_{name.upper()}_PORT": str(free_port()) for name in SERVICES},
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
        """A channel to one of the stack's services as `role` (per RPC persona if none)."""
        address = f"127.0.0.1:{self.port(service)}"
        if role:
            return channel_as(self.settings, address, role, **identity)
        return persona_channel(self.settings, address)

    def port(self, service: str) -> int:
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
