"""The front-door pacer: lifecycle starts yield to a busy, slow SubmitOrder and only then."""

from __future__ import annotations

from oms_platform.pacing import (
    MIN_SAMPLES,
    UNPACED_AT_FLOORS,
    FrontDoorPacer,
    PacerSettings,
    quantile,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_pacer(target_ms: float = 20, floor: float = 2.0) -> tuple[FrontDoorPacer, Clock]:
    clock = Clock()
    return FrontDoorPacer(PacerSettings(target_ms / 1000, floor, 2.0), clock), clock


def busy_window(pacer: FrontDoorPacer, clock: Clock, latency_ms: float, starts: int = 0) -> None:
    """Two seconds of 40 SubmitOrders/s at `latency_ms`, with `starts` lifecycles started."""
    for i in range(80):
        clock.now += 0.025
        pacer.observe(latency_ms / 1000)
        if i < starts:
            pacer.started(1)


def test_a_quiet_front_door_never_paces_starts_however_slow() -> None:
    pacer, clock = a_pacer()
    for _ in range(MIN_SAMPLES - 1):
        pacer.observe(0.5)
    clock.now += 2.5
    assert pacer.allowance(200) == 200
    assert pacer.pace is None


def test_a_busy_front_door_that_meets_its_target_is_not_paced() -> None:
    pacer, clock = a_pacer()
    busy_window(pacer, clock, latency_ms=8, starts=80)
    clock.now += 0.1
    assert pacer.allowance(200) == 200


def test_a_busy_slow_front_door_drops_starts_to_the_floor_at_once() -> None:
    pacer, clock = a_pacer(floor=2.0)
    for _ in range(MIN_SAMPLES):  # a burst: half a second of slow SubmitOrders
        clock.now += 0.025
        pacer.observe(0.06)
        pacer.started(1)
    clock.now += 0.01
    assert pacer.allowance(200) == 0  # paced, and no credit to start with
    assert pacer.pace == 2.0


def test_a_miss_after_a_raise_halves_the_pace_but_only_once_a_window() -> None:
    pacer, clock = a_pacer(floor=2.0)
    busy_window(pacer, clock, latency_ms=60)
    clock.now += 0.1
    pacer.allowance(200)
    for _ in range(4):  # four windows well within the target: 2 -> 6 per second
        busy_window(pacer, clock, latency_ms=5)
        clock.now += 0.1
        pacer.allowance(200)
    assert pacer.pace == 6.0
    busy_window(pacer, clock, latency_ms=60)
    clock.now += 0.1
    pacer.allowance(200)
    assert pacer.pace == 3.0
    clock.now += 0.6  # looked at again within the window: no second halving yet
    pacer.observe(0.06)
    pacer.allowance(200)
    assert pacer.pace == 3.0


def test_the_pace_never_falls_below_the_floor() -> None:
    pacer, clock = a_pacer(floor=2.0)
    for _ in range(10):
        busy_window(pacer, clock, latency_ms=60)
        clock.now += 0.1
        pacer.allowance(200)
    assert pacer.pace == 2.0


def test_paced_starts_go_out_at_the_pace() -> None:
    pacer, clock = a_pacer(floor=2.0)
    busy_window(pacer, clock, latency_ms=60)  # nothing started: straight to the floor
    clock.now += 0.1
    first = pacer.allowance(200)
    pacer.started(first)
    assert first <= 2
    went = first
    for _ in range(30):  # three seconds in steps, the front door still busy and slow
        clock.now += 0.1
        for _ in range(4):
            pacer.observe(0.06)
        allowed = pacer.allowance(200)
        pacer.started(allowed)
        went += allowed
    assert went == 6  # 2/s
    assert 0 < pacer.seconds_until_next() <= 0.5


def test_a_met_target_raises_the_pace_until_starts_are_unpaced_again() -> None:
    pacer, clock = a_pacer(floor=2.0)
    busy_window(pacer, clock, latency_ms=60)
    clock.now += 0.1
    pacer.allowance(200)
    assert pacer.pace == 2.0
    busy_window(pacer, clock, latency_ms=8)
    clock.now += 0.1
    pacer.allowance(200)
    assert pacer.pace == 3.0
    windows = 0
    while pacer.pace is not None:
        busy_window(pacer, clock, latency_ms=8)
        clock.now += 0.1
        pacer.allowance(200)
        windows += 1
    assert windows == UNPACED_AT_FLOORS * 2 - 3  # +1/s per window, from 3/s to 20 floors
    assert pacer.allowance(200) == 200


def test_when_the_front_door_goes_quiet_pacing_stops_at_once() -> None:
    pacer, clock = a_pacer()
    busy_window(pacer, clock, latency_ms=60)
    clock.now += 0.1
    pacer.allowance(200)
    assert pacer.pace is not None
    clock.now += 5.0  # no SubmitOrder since
    assert pacer.allowance(200) == 200


def test_a_zero_target_turns_pacing_off() -> None:
    pacer, clock = a_pacer(target_ms=0)
    busy_window(pacer, clock, latency_ms=500)
    clock.now += 0.1
    assert pacer.allowance(200) == 200


def test_quantile_is_the_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert quantile(values, 0.95) == 95.0
    assert quantile(values, 0.5) == 50.0
    assert quantile([], 0.95) == 0.0


def test_a_target_met_without_room_to_spare_holds_the_pace() -> None:
    pacer, clock = a_pacer(target_ms=20, floor=2.0)
    busy_window(pacer, clock, latency_ms=60)
    clock.now += 0.1
    pacer.allowance(200)
    assert pacer.pace == 2.0
    for _ in range(3):
        busy_window(pacer, clock, latency_ms=15)  # met, but not by half
        clock.now += 0.1
        pacer.allowance(200)
    assert pacer.pace == 2.0
