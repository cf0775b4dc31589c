"""Temporal's JSON payload converter, with each dataclass's field types resolved once.

The SDK rebuilds a dataclass from JSON by calling `typing.get_type_hints` on the class for
every payload it decodes, and again for every nested dataclass inside it. An order's workflow
decodes its state, its activities' results and every signal and update this way; profiles of
the worker under `oms bench lifecycle` put `get_type_hints` among its busiest functions.

`FieldTypesOnce` is a `JSONTypeConverter`, the SDK's own extension point for decoding: it
handles dataclasses exactly as the SDK does (every field converted, `init=False` fields set
after construction, unknown keys ignored, a missing required field an error) with the field
types read from a per-class cache, and hands everything else back to the SDK.
`PayloadConverter` is the SDK's default payload converter with it installed, every instance
sharing one set of encoding converters; `decode` is `value_to_type` with it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from temporalio.converter import (
    CompositePayloadConverter,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
    value_to_type,
)
from temporalio.converter._payload_converter import JSONTypeConverterUnhandled


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, init) of each field of a dataclass, resolved once per class."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name], f.init) for f in dataclasses.fields(cls))


class FieldTypesOnce(JSONTypeConverter):
    """Dataclasses from JSON objects, with their field types cached per class."""

    def __init__(self) -> None:
        self._converters = [self]

    def to_typed_value(self, hint: type, value: Any) -> Any | JSONTypeConverterUnhandled | None:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return JSONTypeConverter.Unhandled
        if not isinstance(value, dict):
            raise TypeError(f"Cannot convert to dataclass {hint}, value is {type(value)} not dict")
        given: dict[str, Any] = {}
        later: dict[str, Any] = {}
        for name, field_type, init in _fields(hint):
            if name not in value:
                continue  # a missing required field fails the constructor below
            try:
                converted = value_to_type(field_type, value[name], self._converters)
            except Exception as error:
                raise TypeError(f"Failed converting field {name} on dataclass {hint}") from error
            (given if init else later)[name] = converted
        made = hint(**given)
        for name, converted in later.items():
            object.__setattr__(made, name, converted)
        return made


TYPE_CONVERTER = FieldTypesOnce()


def decode(hint: Any, value: Any) -> Any:
    """`value` (as `json.loads` gives it) as `hint`, the way the payload converter decodes."""
    return value_to_type(hint, value, [TYPE_CONVERTER])


# The encoding converters keep no state between payloads, so every `PayloadConverter` shares
# one set, by encoding, read-only: the SDK makes a payload converter for each workflow run it
# starts or replays, and a worker holding 1,000 cached orders holds 1,000 of them.
_BY_ENCODING: Mapping[bytes, EncodingPayloadConverter] = MappingProxyType(
    {
        c.encoding.encode(): c
        for c in (
            JSONPlainPayloadConverter(custom_type_converters=[TYPE_CONVERTER])
            if isinstance(c, JSONPlainPayloadConverter)
            else c
            for c in DefaultPayloadConverter.default_encoding_payload_converters
        )
    }
)


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default payload converters, the JSON one with `FieldTypesOnce`."""

    def __init__(self) -> None:
        # The shared mapping stands in for the dict of new converters the SDK's own
        # constructor would build for every instance.
        self.converters = _BY_ENCODING
