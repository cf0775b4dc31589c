"""The whole system on one machine: what `make dev` (`oms dev`) starts and supervises.

Embedded Postgres and Temporal's dev server (unless settings point at external ones), the
migrations, the four services, a worker, the codec server (the UI decodes payloads through
it) and the warehouse simulator, each in its own process. Children that die are restarted;
Ctrl-C stops everything in reverse order.

On one machine the front door comes first: capture (and Postgres) run at normal CPU priority,
while what can lag without losing anything (Temporal, the worker, the simulator and the
services the lifecycle calls) runs `OMS_STACK_BACKGROUND_NICENESS` lower: the process and
its session group, which is what Linux ranks when it schedules by session (autogroup). Under
a burst the lifecycles slow down instead of SubmitOrder; with CPU to spare nothing changes.

With `dev_tls` (`oms dev --tls`) everything is encrypted: a local CA's certificates
(devstack/certs.py), mutual TLS on every gRPC port, Postgres accepting only TLS, and Temporal's
dev server (which has no TLS of its own) on a private loopback port behind a TLS proxy on the
public Temporal port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from oms_platform import auth, codec_server, db
from oms_platform.codec import ensure_keys_file
from oms_platform.devstack import certs as dev_certs
from oms_platform.devstack.postgres import EmbeddedPostgres
from oms_platform.devstack.temporal_server import (
    TemporalDevServer,
    free_port,
    lower_group_priority,
    niced,
    wait_for_port,
)
from oms_platform.devstack.tls_proxy import TLSProxy, tcp_backend
from oms_platform.service import migrate_all
from oms_platform.settings import SERVICES, Settings
from oms_platform.tls import TLSConfig

log = structlog.get_logger("oms.dev")


@dataclass
class Child:
    """A supervised process of the stack."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    background: bool = True  # runs at the stack's background niceness


@dataclass
class Stack:
    """Starts, supervises and stops the system."""

    settings: Settings
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    temporal_proxy: TLSProxy | None = None
    certificates: dev_certs.DevCertificates | None = None
    children: list[Child] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    async def start(self) -> Settings:
        """Start everything; returns the settings the children run with."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        # The dev issuer's signing key, its JWKS and the internal service-token secret: made
        # once, kept across restarts (tokens already issued stay valid).
        auth.ensure_dev_keys(settings.keys_dir)
        certs = None
        if settings.dev_tls:
            certs, made = dev_certs.ensure(dev_certs.certificates_dir(self.data_dir))
            log.info(
                "tls certificates " + ("generated" if made else "reused"), dir=str(certs.directory)
            )
            settings = certs.grpc_settings(settings)
            self.certificates = certs
        if not settings.database_url:
            self.postgres = EmbeddedPostgres(
                self.data_dir / "postgres" / "data",
                settings.embedded_postgres_port,
                tls=certs.postgres_tls() if certs else None,
            )
            self.postgres.start()
            await db.ensure_database(self.postgres.dsn)
            settings = replace(settings, database_url=self.postgres.dsn)
        applied = await migrate_all(settings)
        log.info("migrations applied", **{k: v for k, v in applied.items() if v})
        if not settings.codec_keys_file and ensure_keys_file(settings.codec_keys_path):
            log.info("development codec key created", path=str(settings.codec_keys_path))
        if not settings.temporal_address:
            public = settings.embedded_temporal_port
            # With TLS the dev server listens privately; the proxy takes the public port.
            private = free_port() if certs else public
            self.temporal = TemporalDevServer(
                self.data_dir / "temporal" / "temporal.db",
                private,
                settings.embedded_temporal_ui_port,
                niceness=settings.stack_background_niceness,
                ui_codec_endpoint=codec_server.endpoint(
                    settings, codec_server.mint_admin_token(settings)
                ),
            )
            self.temporal.start()
            if certs:
                self.temporal_proxy = TLSProxy(
                    ("127.0.0.1", public),
                    tcp_backend("127.0.0.1", private),
                    TLSConfig.from_settings(settings).server_ssl_context(alpn=["h2"]),
                )
                self.temporal_proxy.start()
                settings = certs.temporal_settings(settings)
            settings = replace(settings, temporal_address=f"127.0.0.1:{public}")
        self.settings = settings
        dev_certs.mark_in_use(self.data_dir, settings if certs else None)
        cli = [sys.executable, "-m", "oms_platform.cli"]
        self.children = [
            Child(name, [*cli, "serve", name], background=name != "capture") for name in SERVICES
        ]
        self.children.append(Child("worker", [*cli, "worker"]))
        self.children.append(Child("codec-server", [*cli, "codec-server"]))
        if settings.simulator:
            self.children.append(Child("simulator", [*cli, "simulator"]))
        for child in self.children:
            self._spawn(child)
        for name in SERVICES:
            wait_for_port(settings.host, settings.port_of(name), 60.0)
        wait_for_port(settings.host, settings.codec_server_port, 60.0)
        return settings

    def _spawn(self, child: Child) -> None:
        env = {**os.environ, **self.settings.as_env()}
        log_path = self.data_dir / "logs" / f"{child.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
        niceness = self.settings.stack_background_niceness if child.background else 0
        child.process = subprocess.Popen(
            niced(child.args, niceness), env=env, stdout=out, stderr=out, start_new_session=True
        )
        lower_group_priority(child.process.pid, niceness)
        child.started_at = time.monotonic()

    def banner(self) -> str:
        """Every endpoint, for people."""
        s = self.settings
        encrypted = self.certificates is not None
        lines = [
            "",
            "oms is running" + (" — encrypted (TLS)" if encrypted else ""),
            "─" * 60,
            *(f"  {name:<12} gRPC  {s.address_of(name)}" for name in SERVICES),
            f"  {'temporal':<12} gRPC  {s.temporal_target}  (namespace {s.temporal_namespace})",
        ]
        if self.temporal is not None:
            lines.append(f"  {'temporal ui':<12} http://127.0.0.1:{s.embedded_temporal_ui_port}")
        lines.append(f"  {'codec server':<12} {codec_server.endpoint(s)}  (admins decode payloads)")
        lines.append(f"  {'postgres':<12} {s.dsn}")
        lines.append(
            f"  {'simulator':<12} "
            + (f"on, {s.simulator_step_seconds}s per step" if s.simulator else "off")
        )
        if self.certificates is not None:
            c = self.certificates
            lines += [
                f"  {'tls':<12} gRPC mutual TLS on every port; Postgres TLS only; Temporal via a",
                f"  {'':<12} TLS proxy (the dev server behind it and its UI: plaintext, loopback)",
                f"  {'':<12} CA {c.ca}",
                f"  {'':<12} client cert {c.client} (key {c.client_key.name})",
            ]
        lines += [
            f"  {'logs':<12} {self.data_dir / 'logs'}",
            "─" * 60,
            "  try:  oms order submit --sample   then   oms order watch <order_id>",
            "  stop: Ctrl-C",
            "",
        ]
        return "\n".join(lines)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart children that exit until `stop` is set."""
        while not stop.is_set():
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is None:
                    continue
                child.restarts += 1
                # Back off a child that keeps dying straight after starting.
                quick = time.monotonic() - child.started_at < 5
                log.warning("process exited; restarting", process=child.name, code=code)
                if quick:
                    await asyncio.sleep(min(10, child.restarts))
                if not stop.is_set():
                    self._spawn(child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def stop(self) -> None:
        """Stop children (simulator, worker, services), then Temporal, then Postgres."""
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(15)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.temporal_proxy is not None:
            self.temporal_proxy.stop()
        if self.temporal is not None:
            self.temporal.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.certificates is not None:
            dev_certs.mark_in_use(self.data_dir, None)


async def run_dev(settings: Settings) -> None:
    """`oms dev`: start, print the banner, supervise until Ctrl-C, stop cleanly."""
    stack = Stack(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
        print(stack.banner(), flush=True)
        await stack.supervise(stop)
    finally:
        print("stopping oms…", flush=True)
        stack.stop()
        print("stopped", flush=True)
