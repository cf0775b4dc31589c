"""The payload converter's cached dataclass decoding gives exactly what the SDK's own does."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.converter import DefaultPayloadConverter, value_to_type

from oms_platform.converter import PayloadConverter, decode
from tests.unit.test_billing import an_order, invoice
from workflows.ledger import Ledger
from workflows.state import LifecycleState
from workflows.types import FulfillmentEvent, OrderLifecycleInput


@dataclasses.dataclass
class WithDerived:
    name: str
    tags: list[str]
    derived: int = dataclasses.field(init=False, default=0)


def a_busy_state() -> LifecycleState:
    """A lifecycle state with money moved and an event queued: nested dataclasses, lists,
    dicts, an optional datetime."""
    state = LifecycleState(ledger=Ledger.of(an_order()).state)
    invoice(state, Ledger(state.ledger), 2)
    state.delivered_at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    state.events.append(
        FulfillmentEvent(event_id="ev-1", kind="shipped", fulfillment_order_id="fo-1")
    )
    return state


def as_json(value: Any) -> Any:
    [payload] = DefaultPayloadConverter().to_payloads([value])
    return json.loads(payload.data)


@pytest.mark.parametrize(
    ("hint", "value"),
    [
        (LifecycleState, a_busy_state()),
        (OrderLifecycleInput, an_order()),
        (list[OrderLifecycleInput], [an_order(), an_order()]),
        (dict[str, OrderLifecycleInput], {"a": an_order()}),
        (OrderLifecycleInput | None, an_order()),
    ],
)
def test_decoding_matches_the_sdk(hint: Any, value: Any) -> None:
    plain = as_json(value)
    ours = decode(hint, plain)
    assert ours == value_to_type(hint, plain) == value
    # Through the payload converter a worker uses, too.
    [payload] = PayloadConverter().to_payloads([value])
    assert PayloadConverter().from_payloads([payload], [hint]) == [value]


def test_init_false_fields_are_restored() -> None:
    made = WithDerived("a", ["x"])
    made.derived = 7
    back = decode(WithDerived, as_json(made))
    assert (back.name, back.tags, back.derived) == ("a", ["x"], 7)


def test_a_wrong_field_type_and_a_missing_field_fail_as_in_the_sdk() -> None:
    with pytest.raises(TypeError, match="Failed converting field tags"):
        decode(WithDerived, {"name": "a", "tags": 5, "derived": 1})
    with pytest.raises(TypeError, match="tags"):
        decode(WithDerived, {"name": "a"})
    with pytest.raises(TypeError, match="not dict"):
        decode(WithDerived, ["a"])
    # Unknown keys are ignored, as the SDK does.
    assert decode(WithDerived, {"name": "a", "tags": [], "extra": 1}) == WithDerived("a", [])


def test_a_union_tries_its_members_in_order() -> None:
    plain = {"name": "a", "tags": ["x"], "derived": 0}
    assert decode(int | WithDerived, plain) == WithDerived("a", ["x"])


def test_every_payload_converter_shares_one_set_of_encoding_converters() -> None:
    # The SDK makes one payload converter per workflow run it keeps cached: each must cost
    # an object, not a fresh set of converters.
    first, second = PayloadConverter(), PayloadConverter()
    assert first.converters is second.converters
    assert list(first.converters) == list(DefaultPayloadConverter().converters)
    with pytest.raises(TypeError):
        first.converters[b"json/plain"] = second.converters[b"json/plain"]  # type: ignore[index]
    # Every encoding still round-trips through a shared set.
    values = [None, b"raw", {"a": [1, 2]}, an_order()]
    payloads = first.to_payloads(values)
    hints: list[Any] = [type(None), bytes, dict[str, list[int]], OrderLifecycleInput]
    assert second.from_payloads(payloads, hints) == values
