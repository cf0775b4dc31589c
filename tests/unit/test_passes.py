"""The background consumers' pass loop: paced, never losing a wake-up, waiting out failures."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from oms_platform.passes import Pacing, run_passes


async def test_a_wake_up_during_a_pass_means_another_pass() -> None:
    wake = asyncio.Event()
    passes: list[float] = []

    async def one_pass() -> bool:
        passes.append(time.monotonic())
        if len(passes) == 1:
            wake.set()  # work committed while the first pass ran
            await asyncio.sleep(0.01)
        return False

    # A long poll: only the wake-up can cause the second pass.
    task = asyncio.create_task(run_passes("t", one_pass, wake, Pacing(60.0), (OSError,)))
    try:
        for _ in range(100):
            if len(passes) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert len(passes) == 2


async def test_passes_start_at_most_once_per_interval_however_often_woken() -> None:
    wake = asyncio.Event()
    starts: list[float] = []

    async def one_pass() -> bool:
        starts.append(time.monotonic())
        return False  # done for now: the next pass waits for a wake-up

    async def commits() -> None:  # a commit (and its NOTIFY) every 5 ms
        while True:
            wake.set()
            await asyncio.sleep(0.005)

    task = asyncio.create_task(
        run_passes("t", one_pass, wake, Pacing(60.0, min_interval_seconds=0.05), (OSError,))
    )
    notifying = asyncio.create_task(commits())
    await asyncio.sleep(0.5)
    task.cancel()
    notifying.cancel()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert 2 <= len(starts) <= 11
    assert min(gaps) >= 0.049


async def test_a_pass_that_took_a_full_batch_goes_again_at_once() -> None:
    wake = asyncio.Event()
    starts: list[float] = []

    async def one_pass() -> bool:
        starts.append(time.monotonic())
        return len(starts) < 4  # a backlog of three full batches, then the rest

    task = asyncio.create_task(
        run_passes("t", one_pass, wake, Pacing(60.0, min_interval_seconds=10.0), (OSError,))
    )
    await asyncio.sleep(0.3)
    task.cancel()
    # The backlog drained without waiting out the interval; then it waits to be woken.
    assert len(starts) == 4
    assert starts[-1] - starts[0] < 0.25


async def test_a_transient_failure_is_waited_out_and_anything_else_is_raised() -> None:
    wake = asyncio.Event()
    calls: list[str] = []

    async def one_pass() -> bool:
        calls.append("pass")
        if len(calls) == 1:
            raise OSError("database away")
        if len(calls) == 2:
            raise ValueError("a bug")
        return False

    with pytest.raises(ValueError, match="a bug"):
        await asyncio.wait_for(
            run_passes("t", one_pass, wake, Pacing(0.01, retry_cap_seconds=0.02), (OSError,)), 5
        )
    assert calls == ["pass", "pass"]
