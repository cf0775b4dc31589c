-- Ship-to-store: a store may accept pickup orders it has not got the units for, shipped to it
-- from a warehouse (any warehouse when ship_to_store_from is empty, else only those named).
ALTER TABLE locations
    ADD COLUMN ship_to_store      boolean NOT NULL DEFAULT false,
    ADD COLUMN ship_to_store_from text[]  NOT NULL DEFAULT '{}';

-- Such a fulfillment order ships from its warehouse (location_id) to its store
-- (pickup_location_id): the transfer left (in_transit_to_store, with its carrier and tracking
-- number), then the store received it and set it aside (ready_for_pickup), its units then on
-- the store's shelf and reserved there.
ALTER TABLE fulfillment_orders
    DROP CONSTRAINT fulfillment_orders_status_check,
    ADD CONSTRAINT fulfillment_orders_status_check CHECK (status IN
        ('backordered', 'allocated', 'accepted', 'picked', 'packed', 'shipped', 'rejected',
         'canceled', 'ready_for_pickup', 'picked_up', 'in_transit_to_store')),
    ADD COLUMN transfer_carrier         text NOT NULL DEFAULT '',
    ADD COLUMN transfer_tracking_number text NOT NULL DEFAULT '',
    ADD COLUMN transfer_shipped_at      timestamptz,
    ADD COLUMN received_at_store_at     timestamptz;
