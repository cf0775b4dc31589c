"""The whole system on one machine: what `make dev` (`oms dev`) starts and supervises.

Embedded Postgres and Temporal's dev server (unless settings point at external ones), the
migrations (and on the first start every US ZIP's coordinates, for distance routing), the four
services, a worker, the codec server (the UI decodes payloads through it) and the warehouse
simulator, each in its own process. With `dev_replicas` N
(`oms dev --replicas N`) every service and the worker run N times (devstack/replicas.py), each
replica supervised on its own; the simulated payment processor keeps its state in the data
directory, so every payments replica (and a restarted one) talks to one processor. Every
process that exits, Postgres' postmaster and the Temporal server included, is reaped, logged
and started again after a back-off (oms_platform/backoff.py) on the same port and data; Ctrl-C
stops everything in reverse order. The TLS proxies are threads of this process, not
processes: they live as long as it and keep their ports while the servers behind them restart.

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
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncpg
import structlog

from oms_platform import auth, codec_server, db
from oms_platform.backoff import Backoff
from oms_platform.codec import ensure_keys_file
from oms_platform.settings import SERVICES, Settings
from oms_platform.tls import TLSConfig
from oms_tools.devstack import certs as dev_certs
from oms_tools.devstack import replicas
from oms_tools.devstack.mail_sink import MailSink
from oms_tools.devstack.postgres import EmbeddedPostgres
from oms_tools.devstack.temporal_server import (
    TemporalDevServer,
    free_port,
    lower_group_priority,
    niced,
    wait_for_port,
)
from oms_tools.devstack.tls_proxy import TLSProxy, tcp_backend
from oms_tools.registry import migrate_all
from services.fulfillment import handlers as fulfillment_handlers
from services.fulfillment import postal_data
from services.fulfillment import store as fulfillment_store

log = structlog.get_logger("oms.dev")


def load_us_postal_codes(dsn: str) -> int:
    """Every US ZIP's centroid into fulfillment unless a load already put US codes there (so
    on the first start only; about two seconds), for distance routing to tell any two US
    addresses apart; returns how many were loaded. Runs its own event loop: it is called in
    a thread of its own."""

    async def load() -> int:
        pool = await db.create_pool(dsn, fulfillment_store.SCHEMA, min_size=1, max_size=1)
        try:
            counts = await fulfillment_handlers.postal_code_counts(pool)
            if any(c.loaded and c.country_code == "US" for c in counts):
                return 0
            us = postal_data.us_zip_codes()
            await fulfillment_handlers.load_postal_codes(pool, [us])
            return len(us.codes)
        finally:
            await pool.close()

    return asyncio.run(load())


@dataclass
class Child:
    """A supervised process of the stack: started again, after a back-off, whenever it exits."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    backoff: Backoff
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    # When a process that exited is due to start again (monotonic clock); None while it runs.
    due: float | None = None

    def start(self) -> None:
        """Start (or start again) the process."""
        self.process = self.launch()
        self.started_at = time.monotonic()
        self.due = None

    def ask_to_stop(self) -> None:
        """SIGTERM the process if it runs: it drains and exits on its own."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        """Wait for the process to exit until `deadline` (monotonic clock), then kill it."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def adopt(self, process: subprocess.Popen[bytes]) -> Child:
        """Supervise `process`, already started (and waited for) by its own start()."""
        self.process = process
        self.started_at = time.monotonic()
        return self


@dataclass
class Stack:
    """Starts, supervises and stops the system."""

    settings: Settings
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    temporal_proxy: TLSProxy | None = None
    # Where shopper notifications land on the dev stack (<data_dir>/mail).
    mail_sink: MailSink | None = None
    certificates: dev_certs.DevCertificates | None = None
    # Postgres and Temporal's dev server, when the stack runs them: restarted like the rest,
    # but stopped last (after everything that uses them) and in their own way.
    servers: list[Child] = field(default_factory=list)
    # The oms processes: services, worker, codec server, simulator.
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
            self.servers.append(
                self._child("postgres", self.postgres.spawn).adopt(self.postgres.start())
            )
            await db.ensure_database(self.postgres.dsn)
            settings = replace(settings, database_url=self.postgres.dsn)
        applied = await migrate_all(settings)
        log.info("migrations applied", **{k: v for k, v in applied.items() if v})
        # In a thread while Temporal starts: ready before the services are.
        postal_codes = (
            asyncio.create_task(asyncio.to_thread(load_us_postal_codes, settings.dsn))
            if settings.dev_load_postal_codes
            else None
        )
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
            self.servers.append(
                self._child("temporal", self.temporal.spawn).adopt(self.temporal.start())
            )
            if certs:
                self.temporal_proxy = TLSProxy(
                    ("127.0.0.1", public),
                    tcp_backend("127.0.0.1", private),
                    TLSConfig.from_settings(settings).server_ssl_context(alpn=["h2"]),
                )
                self.temporal_proxy.start()
                settings = certs.temporal_settings(settings)
            settings = replace(settings, temporal_address=f"127.0.0.1:{public}")
        if settings.dev_mail_sink:
            self.mail_sink = MailSink(
                self.data_dir / "mail", settings.smtp_host, settings.smtp_port
            ).start()
        # Every process, each replica too, is told where all the replicas are.
        settings = replicas.with_replica_addresses(settings)
        self.settings = settings
        dev_certs.mark_in_use(self.data_dir, settings if certs else None)
        replicas.mark_in_use(self.data_dir, settings)
        try:
            if postal_codes is not None and (loaded := await postal_codes):
                log.info("US postal codes loaded for distance routing", codes=loaded)
        except (OSError, asyncpg.PostgresError) as error:
            log.warning(
                "US postal codes not loaded; routing knows the seeded prefixes only",
                error=str(error),
            )
        cli = [sys.executable, "-m", "oms_tools.cli"]
        # name: (command, environment of its own), one entry per replica.
        commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        for service in SERVICES:
            for k, (name, port) in enumerate(
                zip(self.replica_names(service), replicas.ports(settings, service), strict=True)
            ):
                own = {f"OMS_{service.upper()}_PORT": str(port), **self._metrics_env(service, k)}
                commands[name] = ([*cli, "serve", service], own)
        for k, name in enumerate(self.replica_names("worker")):
            commands[name] = ([*cli, "worker"], self._metrics_env("worker", k))
        commands["codec-server"] = ([*cli, "codec-server"], {})
        if settings.simulator:
            commands["simulator"] = ([*cli, "simulator"], {})
        # Capture (the front door) keeps normal priority; the rest can lag (module docstring).
        self.children = [
            self._child(
                name,
                functools.partial(self._spawn, name, args, not name.startswith("capture"), own_env),
            )
            for name, (args, own_env) in commands.items()
        ]
        for child in self.children:
            child.start()
        for service in SERVICES:
            for port in replicas.ports(settings, service):
                wait_for_port(settings.host, port, 60.0)
        wait_for_port(settings.host, settings.codec_server_port, 60.0)
        return settings

    def pids(self) -> dict[str, int]:
        """The process id of every running oms process of the stack, by name (e.g. "worker")."""
        return {
            child.name: child.process.pid
            for child in self.children
            if child.process is not None and child.process.poll() is None
        }

    def server_pids(self) -> dict[str, int]:
        """The process id of the stack's embedded Postgres and Temporal server, by name."""
        return {
            server.name: server.process.pid
            for server in self.servers
            if server.process is not None and server.process.poll() is None
        }

    def restart(self, name: str, **env: str) -> None:
        """Stop process `name` as `stop` would and start it again with `env` added to its own
        environment from now on: the memory bench restarts the worker with a small cache."""
        child = next(c for c in self.children if c.name == name)
        launch = child.launch
        assert isinstance(launch, functools.partial)  # _spawn's (name, args, background, env)
        *head, own_env = launch.args
        child.launch = functools.partial(launch.func, *head, {**own_env, **env})
        child.ask_to_stop()
        child.wait_stopped(time.monotonic() + self._stop_patience())
        child.start()

    def _stop_patience(self) -> float:
        """How long a process may take to stop: services drain for their grace after answering
        NOT_SERVING for a moment; the worker waits as long for its running activities."""
        s = self.settings
        return s.shutdown_not_serving_seconds + s.shutdown_grace_seconds + 5

    def _metrics_env(self, role: str, replica: int) -> dict[str, str]:
        """Where replica `replica` (from 0) of `role` serves its metrics, if anywhere."""
        ports = replicas.metrics_ports(self.settings, role)
        return {"OMS_METRICS_PORT": str(ports[replica])} if ports else {}

    def replica_names(self, role: str) -> list[str]:
        """The names of `role`'s processes: the role itself, or `role-1` … `role-N`."""
        count = self.settings.dev_replicas
        return [role] if count <= 1 else [f"{role}-{k}" for k in range(1, count + 1)]

    def _child(self, name: str, launch: Callable[[], subprocess.Popen[bytes]]) -> Child:
        s = self.settings
        backoff = Backoff(initial=s.stack_restart_delay_seconds, cap=s.stack_restart_max_seconds)
        return Child(name, launch, backoff)

    def _spawn(
        self, name: str, args: list[str], background: bool, own_env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.settings.as_env(), **own_env}
        log_path = self.data_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        niceness = self.settings.stack_background_niceness if background else 0
        with open(log_path, "ab") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                niced(args, niceness), env=env, stdout=out, stderr=out, start_new_session=True
            )
        lower_group_priority(process.pid, niceness)
        return process

    def banner(self) -> str:
        """Every endpoint, for people."""
        s = self.settings
        encrypted = self.certificates is not None
        lines = [
            "",
            "oms is running" + (" — encrypted (TLS)" if encrypted else ""),
            "─" * 60,
            *(f"  {name:<12} gRPC  {s.address_of(name).replace(',', ', ')}" for name in SERVICES),
            f"  {'temporal':<12} gRPC  {s.temporal_target}  (namespace {s.temporal_namespace})",
        ]
        if self.temporal is not None:
            lines.append(f"  {'temporal ui':<12} http://127.0.0.1:{s.embedded_temporal_ui_port}")
        lines.append(f"  {'codec server':<12} {codec_server.endpoint(s)}  (admins decode payloads)")
        for role in replicas.METRICS_ROLES:
            urls = [f"http://{s.metrics_host}:{p}/metrics" for p in replicas.metrics_ports(s, role)]
            if urls:
                label = "metrics" if role == replicas.METRICS_ROLES[0] else ""
                lines.append(f"  {label:<12} {role:<12} {', '.join(urls)}")
        lines.append(f"  {'postgres':<12} {s.dsn}")
        if self.mail_sink is not None:
            lines.append(
                f"  {'mail':<12} smtp://{s.smtp_host}:{s.smtp_port}  (shopper notifications, "
                f"kept in {self.mail_sink.directory})"
            )
        lines.append(
            f"  {'simulator':<12} "
            + (f"on, {s.simulator_step_seconds}s per step" if s.simulator else "off")
        )
        if s.dev_replicas > 1:
            lines.append(
                f"  {'replicas':<12} {s.dev_replicas} of each service (called round robin) "
                f"and {s.dev_replicas} workers"
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
        """Reap and restart every process of the stack that exits, until `stop` is set."""
        while not stop.is_set():
            self.check(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    def check(self, now: float) -> None:
        """One supervision pass: note processes that exited (reaping them, so no zombie is
        left) and start those whose back-off has run out. Never waits: a server being started
        again is watched like any other process, so it may die again and back off further."""
        for child in [*self.servers, *self.children]:
            assert child.process is not None
            if child.due is None:
                code = child.process.poll()
                if code is None:
                    continue
                ran = now - child.started_at
                delay = child.backoff.delay_after(ran)
                child.due = now + delay
                log.warning(
                    "process exited",
                    process=child.name,
                    pid=child.process.pid,
                    code=code,
                    signal=signal.Signals(-code).name if code < 0 else None,
                    ran_seconds=round(ran, 1),
                    restart_in_seconds=round(delay, 2),
                )
            elif now >= child.due:
                try:
                    child.start()
                except OSError as error:  # e.g. the binary is gone; try again later
                    delay = child.backoff.delay_after(0.0)
                    child.due = now + delay
                    log.error(
                        "process could not be started",
                        process=child.name,
                        error=str(error),
                        restart_in_seconds=round(delay, 2),
                    )
                    continue
                child.restarts += 1
                log.warning(
                    "process restarted",
                    process=child.name,
                    pid=child.process.pid,
                    restarts=child.restarts,
                )

    def stop(self) -> None:
        """Stop children (simulator, worker, services), then Temporal, then Postgres."""
        for child in reversed(self.children):
            child.ask_to_stop()
        deadline = time.monotonic() + self._stop_patience()
        for child in reversed(self.children):
            child.wait_stopped(deadline)
        if self.mail_sink is not None:
            self.mail_sink.stop()
        if self.temporal_proxy is not None:
            self.temporal_proxy.stop()
        if self.temporal is not None:
            self.temporal.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.certificates is not None:
            dev_certs.mark_in_use(self.data_dir, None)
        replicas.mark_in_use(self.data_dir, None)


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
