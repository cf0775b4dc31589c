"""oms_platform.wire: the common wire types round-trip to their domain values."""

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from oms_platform import wire
from oms_platform.errors import InvalidArgument
from oms_platform.money import Money
from oms_platform.postal import PostalAddress
from workflows.types import Address


def test_money_round_trips() -> None:
    assert wire.money_from_pb(wire.money_to_pb(1999, "USD")) == Money(1999, "USD")


def test_a_timestamp_round_trips_as_an_aware_utc_datetime() -> None:
    at = datetime(2024, 5, 17, 12, 30, 1, 250_000, tzinfo=UTC)
    stamp = wire.timestamp_from_datetime(at)
    assert stamp is not None
    assert wire.timestamp_to_datetime(stamp, "at") == at


def test_no_datetime_leaves_the_timestamp_unset() -> None:
    assert wire.timestamp_from_datetime(None) is None


def test_an_out_of_range_timestamp_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        wire.timestamp_to_datetime(Timestamp(seconds=10**12), "placed_at")
    assert [v.field for v in raised.value.violations] == ["placed_at"]


def test_a_postal_address_round_trips() -> None:
    address = PostalAddress("1 Main St", "Newark", "07102", "US", line2="Apt 2", region="NJ")
    assert wire.postal_address_from_pb(wire.postal_address_to_pb(address)) == address


def test_the_workflow_payload_address_encodes_the_same_way() -> None:
    payload = Address("1 Main St", "Newark", "07102", "US", line2="Apt 2", region="NJ")
    domain = PostalAddress("1 Main St", "Newark", "07102", "US", line2="Apt 2", region="NJ")
    assert wire.postal_address_to_pb(payload) == wire.postal_address_to_pb(domain)
