"""The dev stack's supervision pass over real (tiny) processes: a process that exits is reaped
at once, logged with its code, and started again only when its back-off has run out, each quick
death waiting twice as long as the one before."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
from structlog.testing import capture_logs

from oms_platform.backoff import Backoff
from oms_platform.settings import Settings
from oms_tools.devstack.stack import Child, Stack


def exits_with(code: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def until_zombie(process: subprocess.Popen[bytes]) -> None:
    """Wait until `process` has exited without reaping it (it stays a zombie until someone
    does)."""
    while psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)


def test_an_exited_process_is_reaped_logged_and_restarted_after_a_growing_delay() -> None:
    child = Child("flaky", lambda: exits_with(3), Backoff(initial=0.2, cap=0.4))
    stack = Stack(Settings(), children=[child])
    child.start()
    first = child.process
    assert first is not None
    until_zombie(first)

    with capture_logs() as logs:
        now = time.monotonic()
        stack.check(now)
        assert not psutil.pid_exists(first.pid)  # reaped: no zombie left behind
        assert first.returncode == 3
        assert child.due == now + 0.2
        stack.check(now + 0.1)  # too early
        assert child.process is first
        stack.check(now + 0.2)
        second = child.process
        assert second is not None and second is not first
        until_zombie(second)
        stack.check(now + 0.3)
        assert child.due == now + 0.3 + 0.4  # doubled

    exited = [entry for entry in logs if entry["event"] == "process exited"]
    assert [(e["process"], e["pid"], e["code"]) for e in exited] == [
        ("flaky", first.pid, 3),
        ("flaky", second.pid, 3),
    ]
    assert [e["restart_in_seconds"] for e in exited] == [0.2, 0.4]
    [restarted] = [entry for entry in logs if entry["event"] == "process restarted"]
    assert restarted["pid"] == second.pid and restarted["restarts"] == 1


def test_a_killed_process_is_logged_with_its_signal() -> None:
    child = Child("sleeper", lambda: subprocess.Popen(["sleep", "30"]), Backoff())
    stack = Stack(Settings(), children=[child])
    child.start()
    assert child.process is not None
    child.process.kill()
    until_zombie(child.process)

    with capture_logs() as logs:
        stack.check(time.monotonic())

    [exited] = logs
    assert exited["code"] == -9 and exited["signal"] == "SIGKILL"
