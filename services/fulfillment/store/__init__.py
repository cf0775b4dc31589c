"""Fulfillment's Postgres store: named SQL over the fulfillment schema, domain types out.
Inventory (locations, groups, levels, daily capacity), checkout reservations (carts' units
held on levels), routing (what it reads, delivery groups, decisions), postal codes (loads
of a country's coordinates), fulfillment orders (lines, reservations, shipments), delivery
promises (transit times, the estimate's snapshot), store pickup (ready, due) and
ship-to-store (the transfer and its receipt) are a module each, over `common`; callers use
the package (`store.X`), which re-exports every public name.

Functions that take a connection run inside the caller's transaction, so one RPC can read,
decide (in the domain) and write atomically, together with its idempotency key and outbox row.

Rows are locked in one order everywhere: fulfillment order or checkout reservation (expired
ones in id order), then inventory levels by (location, sku), then a location's daily load by
location. Writers that cannot keep to it (a move releases at one location and reserves at
another; an order consuming a reservation releases its holds before routing reserves) are
retried on a deadlock.
"""

from __future__ import annotations

from services.fulfillment.store.addresses import (
    group_fulfillment_orders as group_fulfillment_orders,
)
from services.fulfillment.store.addresses import (
    set_delivery_address as set_delivery_address,
)
from services.fulfillment.store.checkout import (
    consume as consume,
)
from services.fulfillment.store.checkout import (
    get_reservation as get_reservation,
)
from services.fulfillment.store.checkout import (
    hold as hold,
)
from services.fulfillment.store.checkout import (
    release_expired_batch as release_expired_batch,
)
from services.fulfillment.store.checkout import (
    release_expired_for as release_expired_for,
)
from services.fulfillment.store.checkout import (
    release_if_held as release_if_held,
)
from services.fulfillment.store.common import (
    PERSONAL_COLUMNS as PERSONAL_COLUMNS,
)
from services.fulfillment.store.common import (
    SCHEMA as SCHEMA,
)
from services.fulfillment.store.common import (
    TODAY as TODAY,
)
from services.fulfillment.store.common import (
    Conn as Conn,
)
from services.fulfillment.store.common import (
    postal_address as postal_address,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_ADD_SHIPPED as SQL_ADD_SHIPPED,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_CANCEL as SQL_CANCEL,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_FULFILLMENT_ORDER as SQL_FULFILLMENT_ORDER,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_FULFILLMENT_ORDER_FOR_UPDATE as SQL_FULFILLMENT_ORDER_FOR_UPDATE,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_FULFILLMENT_ORDERS_BY_ID as SQL_FULFILLMENT_ORDERS_BY_ID,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_INSERT_FULFILLMENT_ORDER as SQL_INSERT_FULFILLMENT_ORDER,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_INSERT_LINES as SQL_INSERT_LINES,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_INSERT_RESERVATIONS as SQL_INSERT_RESERVATIONS,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_INSERT_SETTLED_RESERVATION as SQL_INSERT_SETTLED_RESERVATION,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_INSERT_SHIPMENT as SQL_INSERT_SHIPMENT,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_INSERT_SHIPMENT_ITEMS as SQL_INSERT_SHIPMENT_ITEMS,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_LIST_FULFILLMENT_ORDERS as SQL_LIST_FULFILLMENT_ORDERS,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_LOCATION_OF_FULFILLMENT_ORDER as SQL_LOCATION_OF_FULFILLMENT_ORDER,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_LOCATION_OF_SHIPMENT as SQL_LOCATION_OF_SHIPMENT,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_MARK_DELIVERED as SQL_MARK_DELIVERED,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_ORDER_FULFILLMENT_ORDERS_FOR_UPDATE as SQL_ORDER_FULFILLMENT_ORDERS_FOR_UPDATE,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_ORDER_OF_SHIPMENT as SQL_ORDER_OF_SHIPMENT,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_PARTS as SQL_PARTS,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_RECORD_LINE_CHANGES as SQL_RECORD_LINE_CHANGES,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_SET_STATUS as SQL_SET_STATUS,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_SETTLE_WHOLE_RESERVATION as SQL_SETTLE_WHOLE_RESERVATION,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_SHIPMENT as SQL_SHIPMENT,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_SHRINK_RESERVATION as SQL_SHRINK_RESERVATION,
)
from services.fulfillment.store.fulfillment_orders import (
    SQL_TAKE_OFF_LINES as SQL_TAKE_OFF_LINES,
)
from services.fulfillment.store.fulfillment_orders import (
    Page as Page,
)
from services.fulfillment.store.fulfillment_orders import (
    ReservationConflict as ReservationConflict,
)
from services.fulfillment.store.fulfillment_orders import (
    fulfillment_orders_by_id as fulfillment_orders_by_id,
)
from services.fulfillment.store.fulfillment_orders import (
    get_fulfillment_order as get_fulfillment_order,
)
from services.fulfillment.store.fulfillment_orders import (
    get_shipment as get_shipment,
)
from services.fulfillment.store.fulfillment_orders import (
    list_fulfillment_orders as list_fulfillment_orders,
)
from services.fulfillment.store.fulfillment_orders import (
    location_of_fulfillment_order as location_of_fulfillment_order,
)
from services.fulfillment.store.fulfillment_orders import (
    location_of_shipment as location_of_shipment,
)
from services.fulfillment.store.fulfillment_orders import (
    log_order_event as log_order_event,
)
from services.fulfillment.store.fulfillment_orders import (
    mark_delivered as mark_delivered,
)
from services.fulfillment.store.fulfillment_orders import (
    move as move,
)
from services.fulfillment.store.fulfillment_orders import (
    order_fulfillment_orders_for_update as order_fulfillment_orders_for_update,
)
from services.fulfillment.store.fulfillment_orders import (
    order_of_shipment as order_of_shipment,
)
from services.fulfillment.store.fulfillment_orders import (
    record_reservations as record_reservations,
)
from services.fulfillment.store.fulfillment_orders import (
    record_shipment as record_shipment,
)
from services.fulfillment.store.fulfillment_orders import (
    reserve_and_create as reserve_and_create,
)
from services.fulfillment.store.fulfillment_orders import (
    set_status as set_status,
)
from services.fulfillment.store.fulfillment_orders import (
    ship_units as ship_units,
)
from services.fulfillment.store.fulfillment_orders import (
    signal_order as signal_order,
)
from services.fulfillment.store.fulfillment_orders import (
    take_off as take_off,
)
from services.fulfillment.store.inventory import (
    SQL_ADD_LOCATION_GROUP_MEMBERS as SQL_ADD_LOCATION_GROUP_MEMBERS,
)
from services.fulfillment.store.inventory import (
    SQL_ADD_RESERVED as SQL_ADD_RESERVED,
)
from services.fulfillment.store.inventory import (
    SQL_AVAILABLE as SQL_AVAILABLE,
)
from services.fulfillment.store.inventory import (
    SQL_CLEAR_LOCATION_GROUP as SQL_CLEAR_LOCATION_GROUP,
)
from services.fulfillment.store.inventory import (
    SQL_ENSURE_LEVELS as SQL_ENSURE_LEVELS,
)
from services.fulfillment.store.inventory import (
    SQL_ENSURE_LOAD as SQL_ENSURE_LOAD,
)
from services.fulfillment.store.inventory import (
    SQL_FREE_CAPACITY as SQL_FREE_CAPACITY,
)
from services.fulfillment.store.inventory import (
    SQL_LEVELS_FOR_SKUS as SQL_LEVELS_FOR_SKUS,
)
from services.fulfillment.store.inventory import (
    SQL_LEVELS_FOR_UPDATE as SQL_LEVELS_FOR_UPDATE,
)
from services.fulfillment.store.inventory import (
    SQL_LOCATION as SQL_LOCATION,
)
from services.fulfillment.store.inventory import (
    SQL_LOCATION_GROUPS as SQL_LOCATION_GROUPS,
)
from services.fulfillment.store.inventory import (
    SQL_LOCATION_IDS as SQL_LOCATION_IDS,
)
from services.fulfillment.store.inventory import (
    SQL_LOCATIONS as SQL_LOCATIONS,
)
from services.fulfillment.store.inventory import (
    SQL_RECORD_ADJUSTMENTS as SQL_RECORD_ADJUSTMENTS,
)
from services.fulfillment.store.inventory import (
    SQL_RELEASE_UNITS as SQL_RELEASE_UNITS,
)
from services.fulfillment.store.inventory import (
    SQL_RESERVE as SQL_RESERVE,
)
from services.fulfillment.store.inventory import (
    SQL_SET_ON_HAND as SQL_SET_ON_HAND,
)
from services.fulfillment.store.inventory import (
    SQL_SHIP_UNITS as SQL_SHIP_UNITS,
)
from services.fulfillment.store.inventory import (
    SQL_TAKE_CAPACITY as SQL_TAKE_CAPACITY,
)
from services.fulfillment.store.inventory import (
    SQL_UPSERT_LEVELS as SQL_UPSERT_LEVELS,
)
from services.fulfillment.store.inventory import (
    SQL_UPSERT_LOCATION as SQL_UPSERT_LOCATION,
)
from services.fulfillment.store.inventory import (
    SQL_UPSERT_LOCATION_GROUP as SQL_UPSERT_LOCATION_GROUP,
)
from services.fulfillment.store.inventory import (
    adjust_inventory as adjust_inventory,
)
from services.fulfillment.store.inventory import (
    available as available,
)
from services.fulfillment.store.inventory import (
    get_location as get_location,
)
from services.fulfillment.store.inventory import (
    inventory_level as inventory_level,
)
from services.fulfillment.store.inventory import (
    levels_for_skus as levels_for_skus,
)
from services.fulfillment.store.inventory import (
    list_locations as list_locations,
)
from services.fulfillment.store.inventory import (
    location_groups as location_groups,
)
from services.fulfillment.store.inventory import (
    location_ids as location_ids,
)
from services.fulfillment.store.inventory import (
    set_inventory_levels as set_inventory_levels,
)
from services.fulfillment.store.inventory import (
    take_capacity as take_capacity,
)
from services.fulfillment.store.inventory import (
    upsert_location as upsert_location,
)
from services.fulfillment.store.inventory import (
    upsert_location_group as upsert_location_group,
)
from services.fulfillment.store.pickup import (
    lock_due_pickups as lock_due_pickups,
)
from services.fulfillment.store.pickup import (
    mark_ready as mark_ready,
)
from services.fulfillment.store.postal import (
    SEED_SOURCE as SEED_SOURCE,
)
from services.fulfillment.store.postal import (
    SQL_ANALYZE_POSTAL_CODES as SQL_ANALYZE_POSTAL_CODES,
)
from services.fulfillment.store.postal import (
    SQL_DELETE_LOADED_POSTAL_CODES as SQL_DELETE_LOADED_POSTAL_CODES,
)
from services.fulfillment.store.postal import (
    SQL_INSERT_POSTAL_CODES as SQL_INSERT_POSTAL_CODES,
)
from services.fulfillment.store.postal import (
    SQL_POSTAL_CODE_COUNTS as SQL_POSTAL_CODE_COUNTS,
)
from services.fulfillment.store.postal import (
    PostalCodeCount as PostalCodeCount,
)
from services.fulfillment.store.postal import (
    analyze_postal_codes as analyze_postal_codes,
)
from services.fulfillment.store.postal import (
    postal_code_counts as postal_code_counts,
)
from services.fulfillment.store.postal import (
    replace_postal_codes as replace_postal_codes,
)
from services.fulfillment.store.promise import (
    SQL_TRANSIT_TIMES as SQL_TRANSIT_TIMES,
)
from services.fulfillment.store.promise import (
    promise_snapshot as promise_snapshot,
)
from services.fulfillment.store.promise import (
    transit_table as transit_table,
)
from services.fulfillment.store.promised import (
    routes as routes,
)
from services.fulfillment.store.promised import (
    set_promised as set_promised,
)
from services.fulfillment.store.routing import (
    SQL_CANDIDATES as SQL_CANDIDATES,
)
from services.fulfillment.store.routing import (
    SQL_DECISIONS as SQL_DECISIONS,
)
from services.fulfillment.store.routing import (
    SQL_DELIVERY_GROUP as SQL_DELIVERY_GROUP,
)
from services.fulfillment.store.routing import (
    SQL_ENABLED_LEVELS as SQL_ENABLED_LEVELS,
)
from services.fulfillment.store.routing import (
    SQL_ENABLED_LEVELS_LOCKED as SQL_ENABLED_LEVELS_LOCKED,
)
from services.fulfillment.store.routing import (
    SQL_ENSURE_CAPACITY_LOAD as SQL_ENSURE_CAPACITY_LOAD,
)
from services.fulfillment.store.routing import (
    SQL_INSERT_DECISION as SQL_INSERT_DECISION,
)
from services.fulfillment.store.routing import (
    SQL_LOCK_CAPACITY_LOAD as SQL_LOCK_CAPACITY_LOAD,
)
from services.fulfillment.store.routing import (
    SQL_POSTAL_COORDINATES as SQL_POSTAL_COORDINATES,
)
from services.fulfillment.store.routing import (
    SQL_RECORD_DELIVERY_GROUPS as SQL_RECORD_DELIVERY_GROUPS,
)
from services.fulfillment.store.routing import (
    SQL_REJECTING_LOCATIONS as SQL_REJECTING_LOCATIONS,
)
from services.fulfillment.store.routing import (
    RoutingSnapshot as RoutingSnapshot,
)
from services.fulfillment.store.routing import (
    coordinates_of as coordinates_of,
)
from services.fulfillment.store.routing import (
    delivery_group as delivery_group,
)
from services.fulfillment.store.routing import (
    record_decisions as record_decisions,
)
from services.fulfillment.store.routing import (
    record_delivery_groups as record_delivery_groups,
)
from services.fulfillment.store.routing import (
    rejecting_locations as rejecting_locations,
)
from services.fulfillment.store.routing import (
    routing_decisions as routing_decisions,
)
from services.fulfillment.store.routing import (
    routing_snapshot as routing_snapshot,
)
from services.fulfillment.store.ship_to_store import (
    receive_at_store as receive_at_store,
)
from services.fulfillment.store.ship_to_store import (
    ship_to_store as ship_to_store,
)
from services.fulfillment.store.supply import (
    cancel_supply as cancel_supply,
)
from services.fulfillment.store.supply import (
    change_supply as change_supply,
)
from services.fulfillment.store.supply import (
    create_backordered as create_backordered,
)
from services.fulfillment.store.supply import (
    get_supply as get_supply,
)
from services.fulfillment.store.supply import (
    insert_supply as insert_supply,
)
from services.fulfillment.store.supply import (
    list_supply as list_supply,
)
from services.fulfillment.store.supply import (
    open_pre_order as open_pre_order,
)
from services.fulfillment.store.supply import (
    open_supply as open_supply,
)
from services.fulfillment.store.supply import (
    receive_supply as receive_supply,
)
from services.fulfillment.store.supply import (
    release as release,
)
from services.fulfillment.store.supply import (
    repromise as repromise,
)
from services.fulfillment.store.supply import (
    today as today,
)
from services.fulfillment.store.supply import (
    waiting as waiting,
)
from services.fulfillment.store.supply import (
    waiting_at as waiting_at,
)
from services.fulfillment.store.transit import (
    delete_transit_band as delete_transit_band,
)
from services.fulfillment.store.transit import (
    lock_transit_times as lock_transit_times,
)
from services.fulfillment.store.transit import (
    upsert_transit_band as upsert_transit_band,
)
