"""Fulfillment domain: inventory (locations, stock levels, reservations), checkout
reservations (a cart's units held before the order), incoming supply and backorders, routing (the
policy and the plan), postal codes (where recipients are), fulfillment orders (statuses,
progress, shipments, units taken off, listing), delivery promises (business days, ship and
delivery dates), store pickup (ready, collected, not collected) and ship-to-store (the
store's setting, the transfer to it), a module each, over the shared value types in `common`.

Pure: standard library and oms_platform's errors, limits and postal only. The store reads and
writes these types; the servicer converts them to and from the wire. Callers use the package
(`domain.X`); the modules are how it reads.
"""

from __future__ import annotations

from oms_platform.postal import PostalAddress as PostalAddress  # re-exported: domain vocabulary
from services.fulfillment.domain.addresses import (
    AddressChangePlan as AddressChangePlan,
)
from services.fulfillment.domain.addresses import (
    chosen_locations as chosen_locations,
)
from services.fulfillment.domain.addresses import (
    plan_address_change as plan_address_change,
)
from services.fulfillment.domain.addresses import (
    reroutes as reroutes,
)
from services.fulfillment.domain.checkout import (
    CONSUMED as CONSUMED,
)
from services.fulfillment.domain.checkout import (
    EXPIRED as EXPIRED,
)
from services.fulfillment.domain.checkout import (
    HELD as HELD,
)
from services.fulfillment.domain.checkout import (
    MAX_TTL_SECONDS as MAX_TTL_SECONDS,
)
from services.fulfillment.domain.checkout import (
    MIN_TTL_SECONDS as MIN_TTL_SECONDS,
)
from services.fulfillment.domain.checkout import (
    RESERVATION_STATUSES as RESERVATION_STATUSES,
)
from services.fulfillment.domain.checkout import (
    CartLine as CartLine,
)
from services.fulfillment.domain.checkout import (
    CheckoutReservation as CheckoutReservation,
)
from services.fulfillment.domain.checkout import (
    Hold as Hold,
)
from services.fulfillment.domain.checkout import (
    ReservationRequest as ReservationRequest,
)
from services.fulfillment.domain.checkout import (
    WithinLocationGroup as WithinLocationGroup,
)
from services.fulfillment.domain.checkout import (
    cart_group as cart_group,
)
from services.fulfillment.domain.checkout import (
    eligible_locations as eligible_locations,
)
from services.fulfillment.domain.checkout import (
    held_units as held_units,
)
from services.fulfillment.domain.checkout import (
    holds_of_plan as holds_of_plan,
)
from services.fulfillment.domain.checkout import (
    released_status as released_status,
)
from services.fulfillment.domain.checkout import (
    route_with_reservation as route_with_reservation,
)
from services.fulfillment.domain.checkout import (
    unknown_location_group as unknown_location_group,
)
from services.fulfillment.domain.checkout import (
    usable_by as usable_by,
)
from services.fulfillment.domain.checkout import (
    validate_reservation_request as validate_reservation_request,
)
from services.fulfillment.domain.checkout import (
    with_note as with_note,
)
from services.fulfillment.domain.common import (
    DEFAULT_CUTOFF as DEFAULT_CUTOFF,
)
from services.fulfillment.domain.common import (
    DEFAULT_PROCESSING_DAYS as DEFAULT_PROCESSING_DAYS,
)
from services.fulfillment.domain.common import (
    DEFAULT_TIMEZONE as DEFAULT_TIMEZONE,
)
from services.fulfillment.domain.common import (
    EARTH_RADIUS_KM as EARTH_RADIUS_KM,
)
from services.fulfillment.domain.common import (
    Coordinates as Coordinates,
)
from services.fulfillment.domain.common import (
    ProcessingSchedule as ProcessingSchedule,
)
from services.fulfillment.domain.common import (
    ShipToStore as ShipToStore,
)
from services.fulfillment.domain.common import (
    haversine_km as haversine_km,
)
from services.fulfillment.domain.common import (
    normalize_postal_code as normalize_postal_code,
)
from services.fulfillment.domain.common import (
    plural as plural,
)
from services.fulfillment.domain.fulfillment_orders import (
    ACCEPTED as ACCEPTED,
)
from services.fulfillment.domain.fulfillment_orders import (
    ALLOCATED as ALLOCATED,
)
from services.fulfillment.domain.fulfillment_orders import (
    CANCELED as CANCELED,
)
from services.fulfillment.domain.fulfillment_orders import (
    DEFAULT_PAGE_SIZE as DEFAULT_PAGE_SIZE,
)
from services.fulfillment.domain.fulfillment_orders import (
    FULFILLMENT_ORDER_STATUSES as FULFILLMENT_ORDER_STATUSES,
)
from services.fulfillment.domain.fulfillment_orders import (
    IN_TRANSIT_TO_STORE as IN_TRANSIT_TO_STORE,
)
from services.fulfillment.domain.fulfillment_orders import (
    LINE_CHANGE_KINDS as LINE_CHANGE_KINDS,
)
from services.fulfillment.domain.fulfillment_orders import (
    MAX_PAGE_SIZE as MAX_PAGE_SIZE,
)
from services.fulfillment.domain.fulfillment_orders import (
    MOVED as MOVED,
)
from services.fulfillment.domain.fulfillment_orders import (
    OPEN_STATUSES as OPEN_STATUSES,
)
from services.fulfillment.domain.fulfillment_orders import (
    PACKED as PACKED,
)
from services.fulfillment.domain.fulfillment_orders import (
    PICKED as PICKED,
)
from services.fulfillment.domain.fulfillment_orders import (
    PICKED_UP as PICKED_UP,
)
from services.fulfillment.domain.fulfillment_orders import (
    PROGRESS as PROGRESS,
)
from services.fulfillment.domain.fulfillment_orders import (
    READY_FOR_PICKUP as READY_FOR_PICKUP,
)
from services.fulfillment.domain.fulfillment_orders import (
    REJECTED as REJECTED,
)
from services.fulfillment.domain.fulfillment_orders import (
    SHIPPABLE as SHIPPABLE,
)
from services.fulfillment.domain.fulfillment_orders import (
    SHIPPED as SHIPPED,
)
from services.fulfillment.domain.fulfillment_orders import (
    Cursor as Cursor,
)
from services.fulfillment.domain.fulfillment_orders import (
    FulfillmentLine as FulfillmentLine,
)
from services.fulfillment.domain.fulfillment_orders import (
    FulfillmentOrder as FulfillmentOrder,
)
from services.fulfillment.domain.fulfillment_orders import (
    FulfillmentOrderReduction as FulfillmentOrderReduction,
)
from services.fulfillment.domain.fulfillment_orders import (
    LineQuantity as LineQuantity,
)
from services.fulfillment.domain.fulfillment_orders import (
    ListFilter as ListFilter,
)
from services.fulfillment.domain.fulfillment_orders import (
    Shipment as Shipment,
)
from services.fulfillment.domain.fulfillment_orders import (
    ShipmentItem as ShipmentItem,
)
from services.fulfillment.domain.fulfillment_orders import (
    ShipmentPlan as ShipmentPlan,
)
from services.fulfillment.domain.fulfillment_orders import (
    after_line_change as after_line_change,
)
from services.fulfillment.domain.fulfillment_orders import (
    check_move_target as check_move_target,
)
from services.fulfillment.domain.fulfillment_orders import (
    decode_cursor as decode_cursor,
)
from services.fulfillment.domain.fulfillment_orders import (
    encode_cursor as encode_cursor,
)
from services.fulfillment.domain.fulfillment_orders import (
    move_decision as move_decision,
)
from services.fulfillment.domain.fulfillment_orders import (
    must_cancel as must_cancel,
)
from services.fulfillment.domain.fulfillment_orders import (
    page_size as page_size,
)
from services.fulfillment.domain.fulfillment_orders import (
    plan_cancel as plan_cancel,
)
from services.fulfillment.domain.fulfillment_orders import (
    plan_line_change as plan_line_change,
)
from services.fulfillment.domain.fulfillment_orders import (
    plan_order_cancel as plan_order_cancel,
)
from services.fulfillment.domain.fulfillment_orders import (
    plan_shipment as plan_shipment,
)
from services.fulfillment.domain.fulfillment_orders import (
    plan_unpromised as plan_unpromised,
)
from services.fulfillment.domain.fulfillment_orders import (
    progress as progress,
)
from services.fulfillment.domain.fulfillment_orders import (
    refuse as refuse,
)
from services.fulfillment.domain.fulfillment_orders import (
    refuse_move_capacity as refuse_move_capacity,
)
from services.fulfillment.domain.fulfillment_orders import (
    refuse_move_stock as refuse_move_stock,
)
from services.fulfillment.domain.fulfillment_orders import (
    rejection_reasons as rejection_reasons,
)
from services.fulfillment.domain.fulfillment_orders import (
    waiting_of as waiting_of,
)
from services.fulfillment.domain.inventory import (
    ADJUSTMENT_KINDS as ADJUSTMENT_KINDS,
)
from services.fulfillment.domain.inventory import (
    COUNTED as COUNTED,
)
from services.fulfillment.domain.inventory import (
    DAMAGED as DAMAGED,
)
from services.fulfillment.domain.inventory import (
    FULFILLED as FULFILLED,
)
from services.fulfillment.domain.inventory import (
    LOCATION_TYPES as LOCATION_TYPES,
)
from services.fulfillment.domain.inventory import (
    MAX_PROCESSING_DAYS as MAX_PROCESSING_DAYS,
)
from services.fulfillment.domain.inventory import (
    RECEIVED as RECEIVED,
)
from services.fulfillment.domain.inventory import (
    RELEASED as RELEASED,
)
from services.fulfillment.domain.inventory import (
    RESERVED as RESERVED,
)
from services.fulfillment.domain.inventory import (
    Availability as Availability,
)
from services.fulfillment.domain.inventory import (
    InventoryAdjustment as InventoryAdjustment,
)
from services.fulfillment.domain.inventory import (
    InventoryLevel as InventoryLevel,
)
from services.fulfillment.domain.inventory import (
    Location as Location,
)
from services.fulfillment.domain.inventory import (
    LocationGroup as LocationGroup,
)
from services.fulfillment.domain.inventory import (
    ScheduleChange as ScheduleChange,
)
from services.fulfillment.domain.inventory import (
    adjust as adjust,
)
from services.fulfillment.domain.inventory import (
    apply_adjustments as apply_adjustments,
)
from services.fulfillment.domain.inventory import (
    availability as availability,
)
from services.fulfillment.domain.inventory import (
    availability_skus as availability_skus,
)
from services.fulfillment.domain.inventory import (
    available_to_fulfill as available_to_fulfill,
)
from services.fulfillment.domain.inventory import (
    parse_local_time as parse_local_time,
)
from services.fulfillment.domain.inventory import (
    stock_added as stock_added,
)
from services.fulfillment.domain.inventory import (
    validate_adjustments as validate_adjustments,
)
from services.fulfillment.domain.inventory import (
    validate_inventory_levels as validate_inventory_levels,
)
from services.fulfillment.domain.inventory import (
    validate_location as validate_location,
)
from services.fulfillment.domain.inventory import (
    validate_location_group as validate_location_group,
)
from services.fulfillment.domain.inventory import (
    with_schedule as with_schedule,
)
from services.fulfillment.domain.pickup import (
    PICKUP_CARRIER as PICKUP_CARRIER,
)
from services.fulfillment.domain.pickup import (
    must_mark_ready as must_mark_ready,
)
from services.fulfillment.domain.pickup import (
    not_collected_reason as not_collected_reason,
)
from services.fulfillment.domain.pickup import (
    plan_not_collected as plan_not_collected,
)
from services.fulfillment.domain.pickup import (
    plan_pickup as plan_pickup,
)
from services.fulfillment.domain.pickup import (
    ready_note as ready_note,
)
from services.fulfillment.domain.postal import (
    CountryPostalCodes as CountryPostalCodes,
)
from services.fulfillment.domain.postal import (
    MalformedPostalData as MalformedPostalData,
)
from services.fulfillment.domain.postal import (
    PostalCode as PostalCode,
)
from services.fulfillment.domain.postal import (
    Problem as Problem,
)
from services.fulfillment.domain.postal import (
    parse_geonames as parse_geonames,
)
from services.fulfillment.domain.postal import (
    parse_us_zip_records as parse_us_zip_records,
)
from services.fulfillment.domain.postal import (
    postal_prefixes as postal_prefixes,
)
from services.fulfillment.domain.promise import (
    EARLIEST_ORDER as EARLIEST_ORDER,
)
from services.fulfillment.domain.promise import (
    LATEST_ORDER as LATEST_ORDER,
)
from services.fulfillment.domain.promise import (
    BusinessCalendar as BusinessCalendar,
)
from services.fulfillment.domain.promise import (
    DeliveryEstimate as DeliveryEstimate,
)
from services.fulfillment.domain.promise import (
    DeliveryItem as DeliveryItem,
)
from services.fulfillment.domain.promise import (
    DeliveryQuestion as DeliveryQuestion,
)
from services.fulfillment.domain.promise import (
    Holidays as Holidays,
)
from services.fulfillment.domain.promise import (
    PromisedShipment as PromisedShipment,
)
from services.fulfillment.domain.promise import (
    PromiseSnapshot as PromiseSnapshot,
)
from services.fulfillment.domain.promise import (
    Route as Route,
)
from services.fulfillment.domain.promise import (
    TransitBand as TransitBand,
)
from services.fulfillment.domain.promise import (
    TransitTable as TransitTable,
)
from services.fulfillment.domain.promise import (
    estimate_delivery as estimate_delivery,
)
from services.fulfillment.domain.promise import (
    processing_starts as processing_starts,
)
from services.fulfillment.domain.promise import (
    promised_after_shipment as promised_after_shipment,
)
from services.fulfillment.domain.promise import (
    promised_after_transfer as promised_after_transfer,
)
from services.fulfillment.domain.promise import (
    promised_delivery as promised_delivery,
)
from services.fulfillment.domain.promise import (
    ship_date as ship_date,
)
from services.fulfillment.domain.promise import (
    validate_delivery_question as validate_delivery_question,
)
from services.fulfillment.domain.routing import (
    PICKUP as PICKUP,
)
from services.fulfillment.domain.routing import (
    Allocation as Allocation,
)
from services.fulfillment.domain.routing import (
    Alternative as Alternative,
)
from services.fulfillment.domain.routing import (
    Candidate as Candidate,
)
from services.fulfillment.domain.routing import (
    DeliveryGroup as DeliveryGroup,
)
from services.fulfillment.domain.routing import (
    ExcludeLocations as ExcludeLocations,
)
from services.fulfillment.domain.routing import (
    Exclusion as Exclusion,
)
from services.fulfillment.domain.routing import (
    GroupPlan as GroupPlan,
)
from services.fulfillment.domain.routing import (
    PickupAtStore as PickupAtStore,
)
from services.fulfillment.domain.routing import (
    PlanOption as PlanOption,
)
from services.fulfillment.domain.routing import (
    PlanScore as PlanScore,
)
from services.fulfillment.domain.routing import (
    RoutingDecision as RoutingDecision,
)
from services.fulfillment.domain.routing import (
    RoutingLine as RoutingLine,
)
from services.fulfillment.domain.routing import (
    RoutingPlan as RoutingPlan,
)
from services.fulfillment.domain.routing import (
    RoutingPolicy as RoutingPolicy,
)
from services.fulfillment.domain.routing import (
    RoutingRule as RoutingRule,
)
from services.fulfillment.domain.routing import (
    decisions_of as decisions_of,
)
from services.fulfillment.domain.routing import (
    explain_choice as explain_choice,
)
from services.fulfillment.domain.routing import (
    route as route,
)
from services.fulfillment.domain.routing import (
    route_group as route_group,
)
from services.fulfillment.domain.routing import (
    validate_routing_request as validate_routing_request,
)
from services.fulfillment.domain.ship_to_store import (
    must_ship_to_store as must_ship_to_store,
)
from services.fulfillment.domain.ship_to_store import (
    receipt_reason as receipt_reason,
)
from services.fulfillment.domain.ship_to_store import (
    ship_to_store_violations as ship_to_store_violations,
)
from services.fulfillment.domain.ship_to_store import (
    transfer_note as transfer_note,
)
from services.fulfillment.domain.ship_to_store import (
    with_ship_to_store as with_ship_to_store,
)
from services.fulfillment.domain.supply import (
    ADVANCE_SHIP_NOTICE as ADVANCE_SHIP_NOTICE,
)
from services.fulfillment.domain.supply import (
    BACKORDERED as BACKORDERED,
)
from services.fulfillment.domain.supply import (
    PRE_ORDER as PRE_ORDER,
)
from services.fulfillment.domain.supply import (
    PURCHASE_ORDER as PURCHASE_ORDER,
)
from services.fulfillment.domain.supply import (
    SUPPLY_CANCELED as SUPPLY_CANCELED,
)
from services.fulfillment.domain.supply import (
    SUPPLY_KINDS as SUPPLY_KINDS,
)
from services.fulfillment.domain.supply import (
    SUPPLY_OPEN as SUPPLY_OPEN,
)
from services.fulfillment.domain.supply import (
    SUPPLY_RECEIVED as SUPPLY_RECEIVED,
)
from services.fulfillment.domain.supply import (
    SUPPLY_STATUSES as SUPPLY_STATUSES,
)
from services.fulfillment.domain.supply import (
    Backorder as Backorder,
)
from services.fulfillment.domain.supply import (
    Supply as Supply,
)
from services.fulfillment.domain.supply import (
    SupplyRequest as SupplyRequest,
)
from services.fulfillment.domain.supply import (
    Waiting as Waiting,
)
from services.fulfillment.domain.supply import (
    backorder as backorder,
)
from services.fulfillment.domain.supply import (
    backorder_sentence as backorder_sentence,
)
from services.fulfillment.domain.supply import (
    canceled_reason as canceled_reason,
)
from services.fulfillment.domain.supply import (
    changed_supply as changed_supply,
)
from services.fulfillment.domain.supply import (
    check_one_pre_order as check_one_pre_order,
)
from services.fulfillment.domain.supply import (
    check_open as check_open,
)
from services.fulfillment.domain.supply import (
    check_receipt as check_receipt,
)
from services.fulfillment.domain.supply import (
    date_moved_reason as date_moved_reason,
)
from services.fulfillment.domain.supply import (
    receipt_adjustment as receipt_adjustment,
)
from services.fulfillment.domain.supply import (
    receipt_status as receipt_status,
)
from services.fulfillment.domain.supply import (
    repromise as repromise,
)
from services.fulfillment.domain.supply import (
    repromised_reason as repromised_reason,
)
from services.fulfillment.domain.supply import (
    to_release as to_release,
)
from services.fulfillment.domain.supply import (
    usable as usable,
)
from services.fulfillment.domain.supply import (
    validate_supply as validate_supply,
)
from services.fulfillment.domain.transit import (
    TransitRow as TransitRow,
)
from services.fulfillment.domain.transit import (
    check_transit_band as check_transit_band,
)
from services.fulfillment.domain.transit import (
    check_transit_band_removal as check_transit_band_removal,
)
from services.fulfillment.domain.transit import (
    transit_rows as transit_rows,
)
from services.fulfillment.domain.transit import (
    validate_transit_band as validate_transit_band,
)
