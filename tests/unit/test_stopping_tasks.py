"""Stopping a service's background tasks: a task that swallows a cancellation (as
`asyncio.wait_for` on Python 3.11 does when what it waits for completes at that moment) is
cancelled again until it ends; one that never ends is named, and stopping goes on."""

from __future__ import annotations

import asyncio

from oms_platform.listen import woken
from oms_platform.service import cancel_all


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def stubborn_once() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(stubborn_once())
    await asyncio.sleep(0)
    assert await cancel_all([task], 5.0) == set()
    assert swallowed == 1 and task.cancelled()


async def test_a_task_that_never_ends_is_returned_after_the_time_allowed() -> None:
    async def never_ends() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(never_ends())
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    assert await cancel_all([task, done], 0.3) == {task}
    task.get_coro().close()  # type: ignore[union-attr]


async def test_woken_answers_whether_the_event_was_set_and_is_cancellable() -> None:
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await woken(event, 5) is True
    # Cancelled while the event is set at the same moment: the cancellation still stands.
    event.clear()
    waiter = asyncio.create_task(woken(event, 5))
    await asyncio.sleep(0)
    event.set()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
