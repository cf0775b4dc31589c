"""Every oms process runs its command on the event loop `OMS_EVENT_LOOP` names: uvloop unless
told otherwise, the standard library's loop on request, and a clear error for anything else."""

from __future__ import annotations

import argparse
import asyncio

import pytest
import uvloop

from oms_platform.loop import event_loop_factory
from oms_platform.settings import Settings
from oms_tools import cli


def _loop_of_a_command(monkeypatch: pytest.MonkeyPatch) -> type[asyncio.AbstractEventLoop]:
    """The loop class `oms migrate` runs on (its command swapped for a probe)."""
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def probe(settings: Settings, args: argparse.Namespace) -> int:
        seen.append(type(asyncio.get_running_loop()))
        return 0

    monkeypatch.setattr(cli, "command", {"migrate": probe}.__getitem__)
    assert cli.main(["migrate"]) == 0
    return seen[0]


def test_a_command_runs_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMS_EVENT_LOOP", raising=False)
    assert Settings().event_loop == "uvloop"
    assert _loop_of_a_command(monkeypatch) is uvloop.Loop


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_EVENT_LOOP", "asyncio")
    loop = _loop_of_a_command(monkeypatch)
    assert loop is not uvloop.Loop
    assert issubclass(loop, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused_naming_the_setting_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"OMS_EVENT_LOOP must be one of asyncio, uvloop"):
        event_loop_factory("trio")


async def test_the_suite_itself_runs_on_uvloop() -> None:
    # The services, workers and clients the integration tests start in-process run on it.
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
