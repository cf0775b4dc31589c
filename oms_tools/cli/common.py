"""What the `oms` commands share: output helpers, callers and channels."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from oms.capture.v1 import capture_pb2
from oms.fulfillment.v1 import fulfillment_pb2 as fpb

from oms_platform.money import format_minor


def status_name(value: Any) -> str:
    return capture_pb2.OrderStatus.Name(value).removeprefix("ORDER_STATUS_").lower()


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """A protobuf enum value's name without its prefix, in lower case."""
    return str(enum.Name(value)).removeprefix(prefix).lower()


def fo_status_name(value: Any) -> str:
    return fpb.FulfillmentOrderStatus.Name(value).removeprefix("FULFILLMENT_ORDER_STATUS_").lower()


def as_json(message: Any) -> str:
    return json.dumps(
        MessageToDict(message, preserving_proto_field_name=True), indent=2, sort_keys=True
    )


def money_text(m: Any) -> str:
    return format_minor(m.amount_minor, m.currency) if m.currency else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under their headers, in columns as wide as their widest cell; numbers to the right."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(isinstance(row[i], int) or row[i] == "-" for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])
