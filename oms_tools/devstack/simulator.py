"""The warehouse-and-carrier simulator of the dev stack.

It plays every location and carrier through the same public RPCs a real warehouse would call:
accept, pick, pack, ship (with a carrier and tracking number) and deliver, each step a
configurable delay after the previous one. A ship-to-store pickup's warehouse ships it to the
store instead (`ShipToStore`), and the simulator stops there: receiving it, setting it aside
and handing it over are the store's. It is a warehouse like any other to oms: its token
(signed by the dev stack's issuer) carries the warehouse role and the locations it plays,
every location oms knows, re-read every so often. Asked to (`simulator_reject_rate`), it
rejects some allocated fulfillment orders instead of accepting them, so their lines are
routed again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import grpc
import structlog
from oms.fulfillment.v1 import fulfillment_pb2 as fpb
from oms.fulfillment.v1 import fulfillment_pb2_grpc

from oms_platform import auth, grpcutil
from oms_platform.settings import Settings
from oms_platform.tls import TLSConfig

log = structlog.get_logger("oms.simulator")

OPEN = [
    fpb.FULFILLMENT_ORDER_STATUS_ALLOCATED,
    fpb.FULFILLMENT_ORDER_STATUS_ACCEPTED,
    fpb.FULFILLMENT_ORDER_STATUS_PICKED,
    fpb.FULFILLMENT_ORDER_STATUS_PACKED,
]
CARRIER = "SIMPOST"
REJECT_REASON = "simulated: the units were not found on the shelf"
# New locations (a merchandiser's UpsertLocation) join the simulator's token this often.
LOCATIONS_REFRESH_SECONDS = 10.0
# Each call's deadline.
CALL_TIMEOUT_SECONDS = 10.0
# Errors that say fulfillment did not act and will not: the fulfillment order or shipment is
# unknown, or not in a state for the call. Any other error (a deadline, a replica going away)
# leaves it unknown whether the call took effect.
FINAL_REFUSALS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def tracking_number(fulfillment_order_id: str) -> str:
    """A stable tracking number, so a repeated shipment report is recognisably the same."""
    return "SIM" + hashlib.sha256(fulfillment_order_id.encode()).hexdigest()[:12].upper()


def rejects(fulfillment_order_id: str, rate: float) -> bool:
    """Whether the simulator rejects a fulfillment order: a stable draw per id, so a restart
    decides the same, and a replacement (a new id) gets a draw of its own."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"reject:{fulfillment_order_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


class Simulator:
    """Moves every open fulfillment order one step per `step_seconds`, then delivers (with
    no delay, all its steps in one go)."""

    def __init__(self, settings: Settings) -> None:
        self._step = settings.simulator_step_seconds
        self._poll = settings.simulator_poll_seconds
        self._reject_rate = settings.simulator_reject_rate
        self._issuer = auth.TokenIssuer.from_settings(settings)
        self._locations: frozenset[str] = frozenset()
        self._token = self._issuer.issue("simulator", [auth.WAREHOUSE], ttl_seconds=3600)
        self._token_renew_at = 0.0
        self._channel = grpcutil.channel(
            settings.address_of("fulfillment"),
            lambda: self._token,
            tls=TLSConfig.from_settings(settings),
        )
        self._stub = fulfillment_pb2_grpc.FulfillmentServiceStub(self._channel)
        # Shipments waiting for delivery: shipment id -> monotonic time it shipped.
        self._in_transit: dict[str, float] = {}
        # Fulfillment orders whose last step failed: it may have been made anyway (a shipment
        # recorded, its answer lost) or by someone else, so each is looked at again.
        self._unsure: set[str] = set()
        self._busy: set[str] = set()
        self._limit = asyncio.Semaphore(64)

    async def run(self) -> None:
        """Run until cancelled."""
        await self._recover_in_transit()
        while True:
            try:
                await self.tick()
            except grpc.aio.AioRpcError as error:
                log.warning("simulator pass failed", code=error.code().name)
            await asyncio.sleep(self._poll)

    async def _refresh_identity(self) -> None:
        """Act for every location oms knows: a warehouse token naming them all."""
        if time.monotonic() < self._token_renew_at:
            return
        page = await self._stub.ListLocations(
            fpb.ListLocationsRequest(), timeout=CALL_TIMEOUT_SECONDS
        )
        self._locations = frozenset(loc.location_id for loc in page.locations)
        self._token = self._issuer.issue(
            "simulator", [auth.WAREHOUSE], locations=self._locations, ttl_seconds=3600
        )
        self._token_renew_at = time.monotonic() + LOCATIONS_REFRESH_SECONDS

    async def tick(self) -> None:
        """One pass: advance every due fulfillment order and deliver every due shipment."""
        await self._refresh_identity()
        await self._settle_unsure()
        now = time.time()
        jobs = []
        async for fo in self._open_orders():
            due = fo.updated_at.seconds + fo.updated_at.nanos / 1e9 + self._step
            if due <= now and fo.fulfillment_order_id not in self._busy:
                jobs.append(self._advance(fo))
        mono = time.monotonic()
        for shipment_id, shipped in list(self._in_transit.items()):
            if shipped + self._step <= mono:
                jobs.append(self._deliver(shipment_id))
        await asyncio.gather(*jobs)

    async def _open_orders(self) -> AsyncIterator[fpb.FulfillmentOrder]:
        token = ""
        while True:
            page = await self._stub.ListFulfillmentOrders(
                fpb.ListFulfillmentOrdersRequest(statuses=OPEN, page_size=1000, page_token=token),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            for fo in page.fulfillment_orders:
                yield fo
            token = page.next_page_token
            if not token:
                return

    async def _advance(self, fo: fpb.FulfillmentOrder) -> None:
        """Move `fo` one step; with no delay per step (`simulator_step_seconds` 0), every
        step at once, through to delivery, as a warehouse with nothing to wait for would."""
        fo_id = fo.fulfillment_order_id
        self._busy.add(fo_id)
        shipped = ""
        try:
            async with self._limit:
                status: int | None = fo.status
                while status is not None:
                    status, shipped = await self._step_once(fo, status)
                    if self._step > 0:
                        break
        except grpc.aio.AioRpcError as error:
            # Another actor (an agent, the CLI) may have moved it first (shipped it, even), or
            # the step was made and its answer lost: the next pass re-reads the open ones and
            # looks at this one again.
            log.info(
                "simulator step refused",
                fulfillment_order_id=fo_id,
                code=error.code().name,
                detail=error.details(),
            )
            self._unsure.add(fo_id)
        finally:
            self._busy.discard(fo_id)
        if shipped and self._step <= 0:
            await self._deliver(shipped)

    async def _step_once(self, fo: fpb.FulfillmentOrder, status: int) -> tuple[int | None, str]:
        """One warehouse step from `status`: the status it leads to (None: nothing more to
        do here), and the shipment id when it shipped."""
        fo_id = fo.fulfillment_order_id
        if status == fpb.FULFILLMENT_ORDER_STATUS_ALLOCATED and rejects(fo_id, self._reject_rate):
            await self._stub.RejectFulfillmentOrder(
                fpb.RejectFulfillmentOrderRequest(
                    fulfillment_order_id=fo_id,
                    idempotency_key=f"sim-reject:{fo_id}",
                    reason=REJECT_REASON,
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            return None, ""
        if status == fpb.FULFILLMENT_ORDER_STATUS_ALLOCATED:
            await self._stub.AcceptFulfillmentOrder(
                fpb.AcceptFulfillmentOrderRequest(fulfillment_order_id=fo_id),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            return fpb.FULFILLMENT_ORDER_STATUS_ACCEPTED, ""
        if status == fpb.FULFILLMENT_ORDER_STATUS_ACCEPTED:
            await self._stub.MarkFulfillmentOrderPicked(
                fpb.MarkFulfillmentOrderPickedRequest(fulfillment_order_id=fo_id),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            return fpb.FULFILLMENT_ORDER_STATUS_PICKED, ""
        if status == fpb.FULFILLMENT_ORDER_STATUS_PICKED:
            await self._stub.MarkFulfillmentOrderPacked(
                fpb.MarkFulfillmentOrderPackedRequest(fulfillment_order_id=fo_id),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            return fpb.FULFILLMENT_ORDER_STATUS_PACKED, ""
        if status == fpb.FULFILLMENT_ORDER_STATUS_PACKED and _to_a_store(fo):
            # Ship-to-store: the warehouse's part ends with the transfer; the store marks the
            # parcel ready when it arrives.
            await self._stub.ShipToStore(
                fpb.ShipToStoreRequest(
                    fulfillment_order_id=fo_id,
                    idempotency_key=f"sim-ship-to-store:{fo_id}",
                    carrier=CARRIER,
                    tracking_number=tracking_number(fo_id),
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            return None, ""
        if status == fpb.FULFILLMENT_ORDER_STATUS_PACKED:
            shipped = await self._stub.ConfirmShipment(
                fpb.ConfirmShipmentRequest(
                    fulfillment_order_id=fo_id,
                    idempotency_key=f"sim-ship:{fo_id}",
                    carrier=CARRIER,
                    service="ground",
                    tracking_number=tracking_number(fo_id),
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            shipment_id = shipped.shipment.shipment_id
            self._in_transit[shipment_id] = time.monotonic()
            return None, shipment_id
        return None, ""

    async def _deliver(self, shipment_id: str) -> None:
        async with self._limit:
            try:
                await self._stub.ConfirmDelivery(
                    fpb.ConfirmDeliveryRequest(shipment_id=shipment_id),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                self._in_transit.pop(shipment_id, None)
            except grpc.aio.AioRpcError as error:
                log.info(
                    "simulator delivery refused",
                    shipment_id=shipment_id,
                    code=error.code().name,
                    detail=error.details(),
                )
                # Delivering is idempotent: anything but a final refusal is tried again.
                if error.code() in FINAL_REFUSALS:
                    self._in_transit.pop(shipment_id, None)

    async def _settle_unsure(self) -> None:
        """Look again at fulfillment orders whose step failed: one that shipped after all (the
        answer was lost, or someone else shipped it) has its parcel put in transit; an open one
        is advanced by the pass as usual."""
        for fo_id in list(self._unsure):
            try:
                found = await self._stub.GetFulfillmentOrder(
                    fpb.GetFulfillmentOrderRequest(fulfillment_order_id=fo_id),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in FINAL_REFUSALS:
                    self._unsure.discard(fo_id)
                continue
            self._unsure.discard(fo_id)
            self._track_undelivered(found.fulfillment_order)

    def _track_undelivered(self, fo: fpb.FulfillmentOrder) -> None:
        """Put `fo`'s parcels not delivered yet in transit (those already there keep their
        time)."""
        for shipment in fo.shipments:
            if not shipment.HasField("delivered_at"):
                self._in_transit.setdefault(shipment.shipment_id, time.monotonic())

    async def _recover_in_transit(self) -> None:
        """After a restart, pick up shipped parcels that were never delivered."""
        try:
            await self._refresh_identity()
        except grpc.aio.AioRpcError as error:
            log.warning("simulator could not list locations", code=error.code().name)
            return
        token = ""
        while True:
            try:
                page = await self._stub.ListFulfillmentOrders(
                    fpb.ListFulfillmentOrdersRequest(
                        statuses=[fpb.FULFILLMENT_ORDER_STATUS_SHIPPED],
                        page_size=1000,
                        page_token=token,
                    ),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as error:
                log.warning("simulator could not recover parcels", code=error.code().name)
                return
            for fo in page.fulfillment_orders:
                self._track_undelivered(fo)
            token = page.next_page_token
            if not token:
                return

    async def close(self) -> None:
        await self._channel.close()


def _to_a_store(fo: fpb.FulfillmentOrder) -> bool:
    """A pickup a warehouse ships to the store (ship-to-store), not one the store holds."""
    return bool(fo.pickup_location_id) and fo.pickup_location_id != fo.location_id
