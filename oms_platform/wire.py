"""The common wire types (oms.common.v1 Money and PostalAddress, google.protobuf.Timestamp)
to and from their domain values: one converter per concept, used by every service's edge and
by the workflow's activities.

Only edges import this module; domain modules see `oms_platform.money.Money`,
`oms_platform.postal.PostalAddress`, `date` and `datetime`, never protobuf.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from oms.capture.v1 import capture_pb2
from oms.common.v1 import common_pb2
from oms.payments.v1 import payments_pb2

from oms_platform import limits
from oms_platform.errors import FieldViolation, InvalidArgument
from oms_platform.money import Money
from oms_platform.postal import PostalAddress

# ---- money ------------------------------------------------------------------------------------


def money_to_pb(amount_minor: int, currency: str) -> common_pb2.Money:
    """The wire Money for an amount in minor units of `currency`."""
    return common_pb2.Money(amount_minor=amount_minor, currency=currency)


def money_from_pb(money: common_pb2.Money) -> Money:
    """The domain Money of a wire Money."""
    return Money(amount_minor=money.amount_minor, currency=money.currency)


# ---- timestamps -------------------------------------------------------------------------------


def timestamp_to_datetime(ts: Timestamp, field: str) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime; InvalidArgument naming `field` when it
    is out of range (Timestamp.ToDatetime would raise ValueError)."""
    return limits.datetime_from_timestamp(field, ts.seconds, ts.nanos)


def timestamp_from_datetime(at: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for `at` (naive means UTC), or None to leave the field unset."""
    if at is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


# ---- days -------------------------------------------------------------------------------------


def day_to_pb(day: date | None) -> str:
    """A day as the API writes it, "YYYY-MM-DD"; empty for none."""
    return day.isoformat() if day else ""


def date_from_pb(value: str, field: str) -> date | None:
    """A "YYYY-MM-DD" day of the API; None when empty, InvalidArgument naming `field` when it
    is not a day."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must be a date, YYYY-MM-DD")]) from None


# ---- postal addresses -------------------------------------------------------------------------


class AddressFields(Protocol):
    """Anything shaped like a postal address: the domain value, or the workflow payload's
    Address (a dataclass of its own because its JSON form is recorded in histories)."""

    @property
    def line1(self) -> str: ...
    @property
    def line2(self) -> str: ...
    @property
    def city(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def postal_code(self) -> str: ...
    @property
    def country_code(self) -> str: ...


def postal_address_to_pb(address: AddressFields) -> common_pb2.PostalAddress:
    """The wire PostalAddress of any address-shaped value."""
    return common_pb2.PostalAddress(
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        region=address.region,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )


def postal_address_from_pb(address: common_pb2.PostalAddress) -> PostalAddress:
    """The domain PostalAddress of a wire PostalAddress."""
    return PostalAddress(
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        region=address.region,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )


# ---- enums every service and the workflow name alike ----------------------------------------

# Sales channels (oms.capture.v1.Channel) and their names in the domain.
CHANNEL_TO_PB: dict[str, capture_pb2.Channel.ValueType] = {
    "web": capture_pb2.CHANNEL_WEB,
    "marketplace": capture_pb2.CHANNEL_MARKETPLACE,
    "store": capture_pb2.CHANNEL_STORE,
    "b2b": capture_pb2.CHANNEL_B2B,
    "agent": capture_pb2.CHANNEL_AGENT,
}
CHANNEL_TO_DOMAIN: dict[int, str] = {v: k for k, v in CHANNEL_TO_PB.items()}

# Payment method types (oms.payments.v1.PaymentMethodType) and their names in the domain.
PAYMENT_TYPE_TO_PB: dict[str, payments_pb2.PaymentMethodType.ValueType] = {
    "card": payments_pb2.PAYMENT_METHOD_TYPE_CARD,
    "gift_card": payments_pb2.PAYMENT_METHOD_TYPE_GIFT_CARD,
    "invoice_terms": payments_pb2.PAYMENT_METHOD_TYPE_INVOICE_TERMS,
}
PAYMENT_TYPE_TO_DOMAIN: dict[int, str] = {v: k for k, v in PAYMENT_TYPE_TO_PB.items()}
