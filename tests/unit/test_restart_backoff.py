"""The dev stack's restart back-off: quick deaths double the wait up to a cap; a process that
ran long enough starts over from the first delay."""

from __future__ import annotations

from oms_platform.backoff import Backoff


def test_a_process_that_keeps_dying_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, cap=5.0, healthy_after=30.0)

    delays = [backoff.delay_after(ran_for=0.2) for _ in range(7)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_a_process_that_ran_long_enough_restarts_after_the_first_delay_again() -> None:
    backoff = Backoff(initial=0.5, cap=30.0, healthy_after=10.0)
    for _ in range(4):
        backoff.delay_after(ran_for=1.0)

    assert backoff.delay_after(ran_for=10.0) == 0.5
    assert backoff.delay_after(ran_for=1.0) == 1.0


def test_the_first_death_after_a_long_run_waits_the_first_delay() -> None:
    assert Backoff(initial=0.25).delay_after(ran_for=3600.0) == 0.25


def test_a_cap_below_the_first_delay_wins() -> None:
    assert Backoff(initial=2.0, cap=1.0).delay_after(ran_for=0.0) == 1.0


def test_a_reset_after_a_success_starts_over_from_the_first_delay() -> None:
    backoff = Backoff(initial=0.5, cap=5.0)
    assert [backoff.delay_after(ran_for=0.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    backoff.reset()
    assert backoff.delay_after(ran_for=0.0) == 0.5
