"""Carrier adapters for return parcels: the port every carrier implements, and the simulated
carrier development and tests use.

A carrier issues one label per key (a retry answers the first label), and says where a
parcel is by its tracking number. The simulated carrier keeps its parcels in Postgres (schema
`simcarrier`, its own book, as a real carrier keeps its own), so every servicing replica and a
test driving the parcel see the same thing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from fpdf import FPDF

from oms_platform.sim_books import SimulatedBooks

# Where a return parcel is.
LABEL_CREATED = "label_created"
IN_TRANSIT = "in_transit"
DELIVERED = "delivered"
PARCEL_STATUSES = (LABEL_CREATED, IN_TRANSIT, DELIVERED)


@dataclass(frozen=True)
class LabelRequest:
    """What a return label is for: the return order, its order, and the units in the parcel
    (SKU and quantity), sent back to `to_name`."""

    return_order_id: str
    order_id: str
    items: tuple[tuple[str, int], ...]
    to_name: str = "oms returns"


@dataclass(frozen=True)
class CarrierLabel:
    """A label the carrier issued: its name, the parcel's tracking number, the label PDF."""

    carrier: str
    tracking_number: str
    pdf: bytes


class Carrier(Protocol):
    """The port a carrier adapter implements. One label per key."""

    async def create_return_label(self, key: str, request: LabelRequest) -> CarrierLabel:
        """Issue (or, for a key seen before, answer again) the label of a return parcel."""
        ...

    async def track(self, tracking_number: str) -> str:
        """Where the parcel is: one of PARCEL_STATUSES."""
        ...


SIM_SCHEMA = "simcarrier"
DDL = """
CREATE SCHEMA IF NOT EXISTS simcarrier;
CREATE TABLE IF NOT EXISTS simcarrier.parcels (
    tracking_number  text PRIMARY KEY,
    key              text NOT NULL UNIQUE,
    status           text NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
"""
SQL_BOOK_PARCEL = """
INSERT INTO simcarrier.parcels (tracking_number, key, status) VALUES ($1, $2, $3)
ON CONFLICT (key) DO NOTHING
"""
SQL_PARCEL_STATUS = "SELECT status FROM simcarrier.parcels WHERE tracking_number = $1"
SQL_MOVE_PARCEL = """
UPDATE simcarrier.parcels SET status = $2, updated_at = now() WHERE tracking_number = $1
RETURNING status
"""


class SimulatedCarrier:
    """A carrier for development and tests, implementing Carrier: tracking numbers derived
    from the key (the same key, the same parcel), labels drawn with fpdf2, and parcels that
    move only when `report` says so (as a real carrier's scans would)."""

    name = "SIMPOST"

    def __init__(self, dsn: str) -> None:
        self._books = SimulatedBooks(dsn, SIM_SCHEMA, DDL)

    async def close(self) -> None:
        """Close the simulator's pool."""
        await self._books.close()

    @staticmethod
    def tracking_number_for(key: str) -> str:
        """The parcel's tracking number: the same for the same key."""
        return "SP" + hashlib.sha256(key.encode()).hexdigest()[:16].upper()

    async def create_return_label(self, key: str, request: LabelRequest) -> CarrierLabel:
        tracking = self.tracking_number_for(key)
        pool = await self._books.pool()
        await pool.execute(SQL_BOOK_PARCEL, tracking, key, LABEL_CREATED)
        return CarrierLabel(self.name, tracking, label_pdf(self.name, tracking, request))

    async def track(self, tracking_number: str) -> str:
        pool = await self._books.pool()
        status = await pool.fetchval(SQL_PARCEL_STATUS, tracking_number)
        if status is None:
            raise LookupError(f"{self.name} has no parcel {tracking_number}")
        return str(status)

    async def report(self, tracking_number: str, status: str) -> None:
        """Move a parcel (what the carrier's scans would report): in_transit or delivered."""
        if status not in PARCEL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(PARCEL_STATUSES)}")
        pool = await self._books.pool()
        if await pool.fetchval(SQL_MOVE_PARCEL, tracking_number, status) is None:
            raise LookupError(f"{self.name} has no parcel {tracking_number}")


def label_pdf(carrier: str, tracking_number: str, request: LabelRequest) -> bytes:
    """A one-page return label: carrier, tracking number, return order and contents."""
    pdf = FPDF(format=(105, 148))  # A6, millimetres
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, f"{carrier} RETURN", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Courier", "B", 12)
    pdf.cell(0, 8, tracking_number, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 6, f"To: {request.to_name}", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 6, f"Return order: {request.return_order_id}", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 6, f"Order: {request.order_id}", new_x="LMARGIN", new_y="NEXT")
    for sku, quantity in request.items:
        pdf.cell(0, 5, f"{quantity} x {sku}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
