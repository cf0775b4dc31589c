"""`--profile DIR`: py-spy profiles of a bench stack's processes while the measured phase runs.

One `py-spy record` per process (the worker and the four services) attaches to it by pid for
the phase and writes `DIR/<process>.json` (speedscope: open it at speedscope.app or in any
viewer of the format). py-spy samples 100 times a second without pausing the process
(`--nonblocking`), and leaves out idle threads, so what it records is where each process
spent its CPU time; the summary ranks functions by their own time (the innermost frame of
each sample), the quickest answer to "what is this process busy with". Only Python frames
are seen: time inside the Temporal SDK's Rust core or gRPC's C core shows under the Python
call that entered it. The samplers cost some CPU of their own, so a profiled run's figures
are a little lower than an unprofiled one's.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

PROFILED = ("worker", "capture", "fulfillment", "payments", "servicing")
SAMPLES_PER_SECOND = 100
TOP = 8
# A sampler that fails (it cannot attach) exits at once; one still running after this has.
ATTACH_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 60.0


def _py_spy() -> str:
    """The py-spy executable: on PATH, or beside this Python (a venv's bin)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError(
            "--profile needs py-spy: pip install -e '.[dev]' (or pip install py-spy)"
        )
    return found


class Profiler:
    """py-spy recording every profiled process of a stack from `start` to `stop`."""

    def __init__(self, directory: Path, pids: dict[str, int]) -> None:
        self.directory = directory
        self.pids = {name: pid for name, pid in pids.items() if name.split("-")[0] in PROFILED}
        self._samplers: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        """Attach a sampler to every process; RuntimeError (saying why) if one cannot."""
        self.directory.mkdir(parents=True, exist_ok=True)
        executable = _py_spy()
        for name, pid in self.pids.items():
            log = open(self.directory / f"{name}.py-spy.log", "wb")  # noqa: SIM115
            self._samplers[name] = subprocess.Popen(
                [executable, "record", "--pid", str(pid), "--format", "speedscope",
                 "--output", str(self.directory / f"{name}.json"), "--nonblocking",
                 "--rate", str(SAMPLES_PER_SECOND)],
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        time.sleep(ATTACH_SECONDS)
        failed = [name for name, p in self._samplers.items() if p.poll() is not None]
        if failed:
            self.stop()
            logs = {name: self._log(name)[-500:] for name in failed}
            raise RuntimeError(f"py-spy could not record {failed} (ptrace allowed?): {logs}")

    def stop(self) -> dict[str, Any]:
        """Stop every sampler (SIGINT: it writes its file) and summarize each profile."""
        for sampler in self._samplers.values():
            if sampler.poll() is None:
                sampler.send_signal(signal.SIGINT)
        for sampler in self._samplers.values():
            try:
                sampler.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
        summary = {}
        for name in self._samplers:
            path = self.directory / f"{name}.json"
            if path.exists():
                summary[name] = {"file": str(path), **own_time(json.loads(path.read_text()))}
        self._samplers.clear()
        return summary

    def _log(self, name: str) -> str:
        return (self.directory / f"{name}.py-spy.log").read_text(errors="replace")


def own_time(speedscope: dict[str, Any], top: int = TOP) -> dict[str, Any]:
    """The busy seconds in a py-spy speedscope profile (every thread), and the `top`
    functions by own time with their share of it."""
    frames = speedscope["shared"]["frames"]
    own: Counter[str] = Counter()
    for profile in speedscope["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if stack:  # root first: the innermost frame is the last
                frame = frames[stack[-1]]
                own[f"{frame['name']} ({_short(frame.get('file') or '')})"] += weight
    busy = sum(own.values())
    return {
        "busy_seconds": round(busy, 2),
        "top": [
            {"function": name, "seconds": round(seconds, 2), "share": round(seconds / busy, 3)}
            for name, seconds in own.most_common(top)
        ],
    }


def _short(path: str) -> str:
    """A frame's file from its package down (site-packages/… or the repository's own)."""
    for marker in ("site-packages/", "/oms_platform/", "/services/", "/workflows/", "/oms_tools/"):
        if marker in path:
            head = marker.strip("/") + "/" if marker != "site-packages/" else ""
            return head + path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def print_summary(summary: dict[str, Any]) -> None:
    """The top functions by own time, per process."""
    for name, profile in summary.items():
        busy = f"{profile['busy_seconds']:g} s busy" if profile["top"] else "idle throughout"
        print(f"\n{name}: {busy}, {profile['file']}")
        for entry in profile["top"]:
            print(f"  {entry['share']:>6.1%}  {entry['seconds']:>7.2f} s  {entry['function']}")
