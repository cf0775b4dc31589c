"""Releasing a checkout reservation, pure: what it leaves the reservation as, and that a
consumed one's units stay the order's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from oms_platform.errors import FailedPrecondition
from services.fulfillment import domain


def reservation(status: str, order_id: str = "") -> domain.CheckoutReservation:
    return domain.CheckoutReservation(
        reservation_id="r-1",
        status=status,
        expires_at=datetime(2025, 3, 3, 12, tzinfo=UTC),
        lines=(domain.CartLine("MUG", 2),),
        holds=(domain.Hold(0, "wh-east", "MUG", 2),),
        order_id=order_id,
    )


def test_a_held_reservation_is_released_and_one_past_its_time_expires() -> None:
    assert domain.released_status(reservation(domain.HELD)) == domain.RELEASED
    assert domain.released_status(reservation(domain.EXPIRED)) == domain.EXPIRED


def test_a_released_reservation_is_left_as_it_is() -> None:
    assert domain.released_status(reservation(domain.RELEASED)) is None


def test_a_consumed_reservation_is_not_released_and_the_refusal_names_its_order() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        domain.released_status(reservation(domain.CONSUMED, order_id="order-9"))

    assert "r-1" in str(refused.value) and "order-9" in str(refused.value)
