"""Capture's domain, erasure of a shopper's personal data: which of their orders are still in
flight, and the refusal that names them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from oms_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.capture.domain.order import SETTLED


@dataclass(frozen=True)
class ErasableOrder:
    """One of the shopper's orders as erasure sees it: its status and units of returns still
    on their way back (initiated, not yet received)."""

    order_id: str
    status: str
    open_return_units: int = 0

    @property
    def in_flight(self) -> bool:
        """Still doing something: not fulfilled or canceled, or a return not yet received
        (money may still move, so its record must stay whole)."""
        return self.status not in SETTLED or self.open_return_units > 0

    @property
    def cancelable(self) -> bool:
        """A forced erasure cancels what has not shipped; open returns cannot be canceled."""
        return self.status not in SETTLED


def check_erase_request(shopper_id: str, email: str) -> None:
    """Raise InvalidArgument unless exactly one of shopper_id and email is given."""
    if bool(shopper_id.strip()) == bool(email.strip()):
        raise InvalidArgument(
            [FieldViolation("shopper_id", "exactly one of shopper_id and email is required")]
        )


def in_flight_refusal(orders: Sequence[ErasableOrder], forced: bool) -> FailedPrecondition | None:
    """The refusal naming every order still in flight, or None when all have settled."""
    busy = [o for o in orders if o.in_flight]
    if not busy:
        return None
    named = ", ".join(
        f"{o.order_id} ({o.status}"
        + (f", {o.open_return_units} returned unit(s) not received" if o.open_return_units else "")
        + ")"
        for o in busy
    )
    if forced:
        return FailedPrecondition(
            f"orders still in flight after canceling what had not shipped: {named}; erase "
            "once they are delivered and their returns received"
        )
    return FailedPrecondition(
        f"orders still in flight: {named}; erase once they are fulfilled or canceled, or "
        "with force to cancel what has not shipped first"
    )
